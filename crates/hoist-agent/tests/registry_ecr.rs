//! The ECR registry against moto (`$HOIST_TEST_MOTO_URL`: ECR's API, STS) paired
//! with the local registry (`$HOIST_TEST_REGISTRY`) for the push: moto has no
//! registry behind its API, so the token comes from moto's `GetAuthorizationToken`
//! and is presented to `127.0.0.1:5000` (which ignores it) through
//! `EcrRegistry::connect`'s registry-host argument. Everything else is the
//! production path: the aws environment's credential chain (environment variables),
//! STS for the account, `DescribeRepositories`, the token's decoding, the push through
//! the Engine API with the token in `X-Registry-Auth`, the manifest HEAD.

use bollard::Docker;
use bollard::query_parameters::{RemoveImageOptions, TagImageOptions};
use hoist_agent::config::{EcrRegistry as EcrConfig, EnvironmentConfig, RegistryConfig};
use hoist_agent::environments::aws::AwsEnvironment;
use hoist_agent::environments::{Ambient, from_config_with};
use hoist_agent::logs::LogSink;
use hoist_agent::registries::ecr::EcrRegistry;
use hoist_agent::registries::push::push;
use hoist_agent::registries::{Registry, RegistryError, from_config};
use std::sync::Arc;

fn require(vars: &[&str]) -> bool {
    let missing: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|v| std::env::var(v).map_or(true, |x| x.is_empty()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("HOIST_TEST_REQUIRE_SERVICES").is_some() {
        panic!(
            "HOIST_TEST_REQUIRE_SERVICES is set but {} not: run scripts/test-env.sh and source ~/.cache/hoist/test-env.sh",
            missing.join(", ")
        );
    }
    eprintln!(
        "skipping: {} not set (run scripts/test-env.sh)",
        missing.join(", ")
    );
    false
}

macro_rules! require {
    ($($v:expr),*) => {
        if !require(&[$($v),*]) {
            return;
        }
    };
}

const REGION: &str = "us-east-1";

/// Test credentials in an explicit environment, endpoints at moto, IMDS off.
fn ambient(home: &std::path::Path) -> Ambient {
    Ambient::new(
        [
            ("AWS_ACCESS_KEY_ID", "AKIAHOISTTEST0000ECR".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "hoist-test-ecr-secret".to_string()),
            ("AWS_REGION", REGION.to_string()),
            (
                "AWS_ENDPOINT_URL",
                std::env::var("HOIST_TEST_MOTO_URL").unwrap(),
            ),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ],
        Some(home.to_path_buf()),
    )
}

fn suffix() -> String {
    format!("{:010x}", rand::random::<u64>() >> 24)
}

/// Deletes the moto repository when dropped.
struct Repo {
    env: Arc<AwsEnvironment>,
    name: String,
}

impl Repo {
    async fn create(env: Arc<AwsEnvironment>) -> Repo {
        let name = format!("hoist-test/jobs-{}", suffix());
        env.ecr_client()
            .create_repository()
            .repository_name(&name)
            .send()
            .await
            .unwrap();
        Repo { env, name }
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let ecr = self.env.ecr_client();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _ = ecr
                    .delete_repository()
                    .repository_name(&name)
                    .force(true)
                    .send()
                    .await;
            });
        })
        .join();
    }
}

fn cfg(repository: &str, account: Option<&str>) -> EcrConfig {
    EcrConfig {
        region: REGION.into(),
        account_id: account.map(str::to_string),
        repository: repository.into(),
    }
}

#[tokio::test]
async fn ecr_repository_and_token_from_moto() {
    require!("HOIST_TEST_MOTO_URL");
    let home = tempfile::tempdir().unwrap();
    let env = Arc::new(
        AwsEnvironment::new(REGION, &ambient(home.path()))
            .await
            .unwrap(),
    );
    let repo = Repo::create(env.clone()).await;

    // Only the repository name: the account comes from STS; the production host.
    let reg = EcrRegistry::connect(&cfg(&repo.name, None), &env, None)
        .await
        .unwrap();
    assert_eq!(reg.account(), "123456789012");
    assert_eq!(
        reg.repository(),
        Some(format!(
            "123456789012.dkr.ecr.{REGION}.amazonaws.com/{}",
            repo.name
        ))
    );
    let auth = reg.auth().await.unwrap().unwrap();
    assert_eq!(auth.username, "AWS");
    assert!(!auth.password.is_empty());
    assert!(!format!("{auth:?}").contains(auth.password.expose()));
    assert_eq!(
        auth.server,
        format!("123456789012.dkr.ecr.{REGION}.amazonaws.com")
    );

    // Through registries::from_config with the environment from its config.
    let dyn_env = from_config_with(
        &EnvironmentConfig::Aws {
            region: REGION.into(),
        },
        &ambient(home.path()),
    )
    .await
    .unwrap();
    dyn_env.verify().await.unwrap();
    let reg = from_config(
        &RegistryConfig::Ecr(cfg(&repo.name, Some("123456789012"))),
        Some(&dyn_env),
        None,
    )
    .await
    .unwrap();
    assert_eq!(reg.kind(), "ecr");

    // A repository that does not exist stops the agent at start-up.
    let e = EcrRegistry::connect(&cfg("hoist-test/no-such-repo", None), &env, None)
        .await
        .unwrap_err();
    let RegistryError::Config(msg) = &e else {
        panic!("expected Config, got {e:?}")
    };
    assert!(
        msg.starts_with("ecr: repository `hoist-test/no-such-repo` does not exist in account 123456789012, region us-east-1"),
        "{msg}"
    );
}

#[tokio::test]
async fn docker_ecr_push_with_moto_token_to_the_paired_local_registry() {
    require!(
        "HOIST_TEST_MOTO_URL",
        "HOIST_TEST_DOCKER",
        "HOIST_TEST_REGISTRY"
    );
    let local = std::env::var("HOIST_TEST_REGISTRY").unwrap();
    let home = tempfile::tempdir().unwrap();
    let env = Arc::new(
        AwsEnvironment::new(REGION, &ambient(home.path()))
            .await
            .unwrap(),
    );
    let repo = Repo::create(env.clone()).await;
    let reg = EcrRegistry::connect(&cfg(&repo.name, None), &env, Some(&local))
        .await
        .unwrap();
    let repository = reg.repository().unwrap();
    assert_eq!(repository, format!("{local}/{}", repo.name));
    let image = format!("{repository}:{}", suffix());
    assert!(!reg.has_image(&image).await.unwrap());

    let d = Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let busybox = std::env::var("HOIST_TEST_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "hoist-test/busybox:latest".to_string());
    let (name, tag) = image.rsplit_once(':').unwrap();
    d.tag_image(
        &busybox,
        Some(TagImageOptions {
            repo: Some(name.to_string()),
            tag: Some(tag.to_string()),
        }),
    )
    .await
    .unwrap();
    let auth = reg.auth().await.unwrap().unwrap();
    assert_eq!(
        (auth.server.as_str(), auth.username.as_str()),
        (local.as_str(), "AWS")
    );
    let result = push(&d, &image, Some(&auth), &LogSink::new()).await;
    let _ = d
        .remove_image(
            &image,
            Some(RemoveImageOptions {
                noprune: true,
                ..Default::default()
            }),
            None,
        )
        .await;
    result.unwrap();
    assert!(reg.has_image(&image).await.unwrap());
}

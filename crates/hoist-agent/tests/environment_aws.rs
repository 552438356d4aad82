//! The aws environment: the default credential chain on an explicit environment map
//! and home directory (never the test process's), checked against moto's STS
//! (`$HOIST_TEST_MOTO_URL`, started by `scripts/test-env.sh`).
//!
//! Tests that need moto are skipped with a note when `HOIST_TEST_MOTO_URL` is unset,
//! unless `HOIST_TEST_REQUIRE_SERVICES` is set (then they fail). The instance-role
//! link is always pointed at a loopback port (`AWS_EC2_METADATA_SERVICE_ENDPOINT`), so
//! no test ever sends a packet to 169.254.169.254.

mod registry_fakes;

use hoist_agent::config::{EnvironmentConfig, EnvironmentType};
use hoist_agent::environments::aws::AwsEnvironment;
use hoist_agent::environments::{Ambient, EnvError, Environment, from_config_with};
use registry_fakes::{Server, closed_port};

fn moto() -> Option<String> {
    match std::env::var("HOIST_TEST_MOTO_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var_os("HOIST_TEST_REQUIRE_SERVICES").is_some() {
                panic!(
                    "HOIST_TEST_REQUIRE_SERVICES is set but HOIST_TEST_MOTO_URL is not: run scripts/test-env.sh and source ~/.cache/hoist/test-env.sh"
                );
            }
            eprintln!(
                "skipping: no moto server (HOIST_TEST_MOTO_URL is not set; run scripts/test-env.sh)"
            );
            None
        }
    }
}

/// No credentials at all; IMDS on a loopback port where nothing listens.
fn bare(home: &std::path::Path) -> Ambient {
    Ambient::new(
        [(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://{}", closed_port()),
        )],
        Some(home.to_path_buf()),
    )
}

#[tokio::test]
async fn aws_verify_with_environment_credentials_against_moto() {
    let Some(moto) = moto() else { return };
    let home = tempfile::tempdir().unwrap();
    let ambient = bare(home.path())
        .with_var("AWS_ACCESS_KEY_ID", "AKIAHOISTTEST0000001")
        .with_var("AWS_SECRET_ACCESS_KEY", "hoist-test-secret-key-value")
        .with_var("AWS_ENDPOINT_URL", &moto);
    let env = from_config_with(
        &EnvironmentConfig::Aws {
            region: "us-east-1".into(),
        },
        &ambient,
    )
    .await
    .unwrap();
    assert_eq!(env.kind(), EnvironmentType::Aws);
    let v = env.verify().await.unwrap();
    assert_eq!(
        v.credentials_from,
        "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
    );
    let arn = v.principal.clone().unwrap();
    assert!(
        arn.starts_with("arn:aws:sts::123456789012:")
            || arn.starts_with("arn:aws:iam::123456789012:"),
        "{arn}"
    );
    assert!(!format!("{env:?} {v}").contains("hoist-test-secret-key-value"));

    let aws = env.as_any().downcast_ref::<AwsEnvironment>().unwrap();
    assert_eq!(aws.region(), "us-east-1");
    assert_eq!(aws.caller_identity().await.unwrap().account, "123456789012");
}

#[tokio::test]
async fn aws_verify_with_a_profile_in_the_home_directory() {
    let Some(moto) = moto() else { return };
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        "[default]\naws_access_key_id = AKIAHOISTTEST0000002\naws_secret_access_key = hoist-profile-secret\n\n[ci]\naws_access_key_id = AKIAHOISTTEST0000003\naws_secret_access_key = hoist-ci-secret\n",
    )
    .unwrap();
    let ambient = bare(home.path()).with_var("AWS_ENDPOINT_URL_STS", &moto);
    let env = AwsEnvironment::new("eu-west-1", &ambient).await.unwrap();
    let v = env.verify().await.unwrap();
    assert!(
        v.credentials_from.starts_with(&format!(
            "profile `default` in {}",
            home.path().join(".aws/credentials").display()
        )),
        "{v}"
    );

    // AWS_PROFILE picks another profile.
    let env = AwsEnvironment::new("eu-west-1", &ambient.clone().with_var("AWS_PROFILE", "ci"))
        .await
        .unwrap();
    let v = env.verify().await.unwrap();
    assert!(v.credentials_from.starts_with("profile `ci` in "), "{v}");
}

#[tokio::test]
async fn aws_without_credentials_names_every_source_tried() {
    let home = tempfile::tempdir().unwrap();
    let ambient = bare(home.path());
    let imds = ambient
        .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap()
        .to_string();
    let env = AwsEnvironment::new("us-east-1", &ambient).await.unwrap();
    let e = env.verify().await.unwrap_err();
    let EnvError::NoCredentials { message: msg } = &e else {
        panic!("expected NoCredentials, got {e:?}")
    };
    eprintln!("{msg}");
    let h = home.path().display();
    for part in [
        "aws: no credentials: tried environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): not set; ".to_string(),
        format!("profile `default` in {h}/.aws/credentials and {h}/.aws/config: neither file exists; "),
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN): not set; ".to_string(),
        "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI): not set; ".to_string(),
        format!("instance role (IMDS at {imds}): "),
    ] {
        assert!(msg.contains(&part), "missing {part:?} in:\n{msg}");
    }
    assert!(msg.ends_with("; set one of them"), "{msg}");

    // IMDS switched off: said so.
    let env = AwsEnvironment::new(
        "us-east-1",
        &ambient
            .clone()
            .with_var("AWS_EC2_METADATA_DISABLED", "true"),
    )
    .await
    .unwrap();
    let e = env.verify().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("): disabled by AWS_EC2_METADATA_DISABLED; set one of them"),
        "{e}"
    );
}

#[tokio::test]
async fn aws_refused_credentials_name_their_source() {
    // moto accepts any key; this fake STS answers as AWS does for an unknown key.
    let fake = Server::start(|f| {
        *f.sts_error.get_mut().unwrap() = Some((
            403,
            "InvalidClientTokenId".into(),
            "The security token included in the request is invalid.".into(),
        ));
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let ambient = bare(home.path())
        .with_var("AWS_ACCESS_KEY_ID", "AKIAHOISTTEST0000BAD")
        .with_var("AWS_SECRET_ACCESS_KEY", "hoist-test-revoked-secret")
        .with_var("AWS_ENDPOINT_URL_STS", &fake.base);
    let env = AwsEnvironment::new("us-east-1", &ambient).await.unwrap();
    let e = env.verify().await.unwrap_err();
    let EnvError::Refused { message: msg, .. } = &e else {
        panic!("expected Refused, got {e:?}")
    };
    assert_eq!(
        msg,
        &format!(
            "aws: STS GetCallerIdentity ({}) refused the credentials from environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): InvalidClientTokenId: The security token included in the request is invalid.",
            fake.base
        )
    );
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn aws_half_configured_environment_credentials_are_a_config_error() {
    let home = tempfile::tempdir().unwrap();
    let e = AwsEnvironment::new(
        "us-east-1",
        &bare(home.path()).with_var("AWS_ACCESS_KEY_ID", "AKIAHOISTTEST0000004"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, EnvError::Config { message: m, .. } if m.contains("AWS_SECRET_ACCESS_KEY is not")),
        "{e:?}"
    );
    // A plain-HTTP endpoint to a remote host is refused.
    let e = AwsEnvironment::new(
        "us-east-1",
        &bare(home.path()).with_var("AWS_ENDPOINT_URL", "http://sts.example.com"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, EnvError::Config { message: m, .. } if m.contains("AWS_ENDPOINT_URL") && m.contains("plain HTTP")),
        "{e:?}"
    );
}

#[tokio::test]
async fn aws_web_identity_assumes_the_role_on_the_configured_sts() {
    let Some(moto) = moto() else { return };
    let home = tempfile::tempdir().unwrap();
    let token = home.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJob2lzdCJ9.c2ln\n").unwrap();
    let ambient = bare(home.path())
        .with_var("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string())
        .with_var("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/hoist-agent")
        .with_var("AWS_ROLE_SESSION_NAME", "hoist-test")
        .with_var("AWS_ENDPOINT_URL", &moto);
    let env = AwsEnvironment::new("us-east-1", &ambient).await.unwrap();
    let v = env.verify().await.unwrap();
    assert_eq!(
        v.credentials_from,
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)"
    );
    let arn = v.principal.unwrap();
    assert!(arn.contains("hoist-agent"), "{arn}");

    // A role without its token file: a load error naming the variable.
    let missing = home.path().join("missing");
    let env = AwsEnvironment::new(
        "us-east-1",
        &ambient
            .clone()
            .with_var("AWS_WEB_IDENTITY_TOKEN_FILE", missing.display().to_string()),
    )
    .await
    .unwrap();
    let e = env.verify().await.unwrap_err();
    assert!(
        matches!(&e, EnvError::Refused { message: m, .. } if m.contains("AWS_WEB_IDENTITY_TOKEN_FILE") && m.contains("cannot be read")),
        "{e:?}"
    );
}

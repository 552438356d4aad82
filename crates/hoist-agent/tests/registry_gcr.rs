//! The Artifact Registry registry: URI and credential construction, and "does the
//! image exist" through the registry's Bearer challenge, against in-process fakes of
//! Google's token endpoint and of Artifact Registry's Distribution API (nothing can
//! reach GCP from here; see `registry_fakes`).

mod registry_fakes;

use std::sync::Arc;

use hoist_agent::config::{GcrRegistry as GcrConfig, RegistryConfig};
use hoist_agent::environments::gcp::GcpEnvironment;
use hoist_agent::environments::{Ambient, Environment};
use hoist_agent::registries::gcr::{GcrRegistry, OAUTH2_USER};
use hoist_agent::registries::{RETRY_ATTEMPTS, Registry, RegistryError, from_config};
use registry_fakes::{RegistryFlavor, Server, rsa_key};
use serde_json::json;

const EMAIL: &str = "pusher@sa-project.iam.gserviceaccount.com";

/// A fake (token endpoint + registry) and a gcp environment whose service account it
/// knows.
async fn setup(dir: &std::path::Path) -> (Server, GcpEnvironment) {
    let (pem, public) = rsa_key();
    let fake = Server::start(|f| {
        *f.google_public_key.get_mut().unwrap() = Some(public);
        *f.google_email.get_mut().unwrap() = EMAIL.to_string();
        *f.registry_flavor.get_mut().unwrap() = Some(RegistryFlavor::ArtifactRegistry);
        f.manifests
            .get_mut()
            .unwrap()
            .insert("sa-project/ml/train:abc123".to_string());
    })
    .await;
    let key = dir.join("sa.json");
    std::fs::write(
        &key,
        json!({
            "type": "service_account", "project_id": "sa-project", "private_key_id": "k1",
            "private_key": pem, "client_email": EMAIL,
            "token_uri": format!("{}/token", fake.base),
        })
        .to_string(),
    )
    .unwrap();
    let env = GcpEnvironment::new(
        "us-central1",
        None,
        &Ambient::new(
            [("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string())],
            None,
        ),
    )
    .unwrap();
    (fake, env)
}

fn cfg(project: Option<&str>) -> GcrConfig {
    GcrConfig {
        region: "us-central1".into(),
        project: project.map(str::to_string),
        repository: "ml".into(),
        image_name: "train".into(),
    }
}

#[tokio::test]
async fn gcr_uri_and_docker_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, env) = setup(dir.path()).await;

    // Project from the service account when the config has none.
    let reg = GcrRegistry::connect(&cfg(None), &env, None).await.unwrap();
    assert_eq!(reg.kind(), "gcr");
    assert_eq!(
        reg.repository().as_deref(),
        Some("us-central1-docker.pkg.dev/sa-project/ml/train")
    );
    let auth = reg.auth().await.unwrap().unwrap();
    assert_eq!(auth.server, "us-central1-docker.pkg.dev");
    assert_eq!(auth.username, OAUTH2_USER);
    assert!(auth.password.expose().starts_with("ya29.sa-"));
    assert!(!format!("{auth:?}").contains(auth.password.expose()));
    // Neither the registry nor its token source (the environment caches the token)
    // shows it in Debug.
    assert!(!format!("{reg:?}").contains(auth.password.expose()));

    // The configured project wins; through registries::from_config too.
    let env: Arc<dyn Environment> = Arc::new(env);
    let reg = from_config(&RegistryConfig::Gcr(cfg(Some("other"))), Some(&env), None)
        .await
        .unwrap();
    assert_eq!(
        reg.repository().as_deref(),
        Some("us-central1-docker.pkg.dev/other/ml/train")
    );
    // Without an environment: a config error.
    let Err(e) = from_config(&RegistryConfig::Gcr(cfg(None)), None, None).await else {
        panic!("a gcr registry without an environment was accepted")
    };
    assert!(
        matches!(&e, RegistryError::Config(m) if m.contains("gcp environment")),
        "{e}"
    );
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn gcr_has_image_answers_the_bearer_challenge_with_the_access_token() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, env) = setup(dir.path()).await;
    let reg = GcrRegistry::connect(&cfg(None), &env, Some(&fake.host))
        .await
        .unwrap();
    let repo = reg.repository().unwrap();
    assert_eq!(repo, format!("{}/sa-project/ml/train", fake.host));
    assert!(reg.has_image(&format!("{repo}:abc123")).await.unwrap());
    assert!(!reg.has_image(&format!("{repo}:unknown")).await.unwrap());
    let requests = fake.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r == "GET /v2/token"),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r == "HEAD /v2/sa-project/ml/train/manifests/abc123"),
        "{requests:?}"
    );
    assert_eq!(fake.problems(), Vec::<String>::new());

    // An image outside the registry is a config error, not a network call.
    let e = reg
        .has_image("us-central1-docker.pkg.dev/x/y/z:1")
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Config(_)), "{e}");
}

#[tokio::test]
async fn gcr_token_the_registry_refuses_is_an_auth_error_naming_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, env) = setup(dir.path()).await;
    let reg = GcrRegistry::connect(&cfg(None), &env, Some(&fake.host))
        .await
        .unwrap();
    // The registry stops accepting the access tokens issued so far (revoked).
    reg.auth().await.unwrap();
    fake.access_tokens.lock().unwrap().clear();
    let before = fake.count("GET /v2/token");
    let e = reg
        .has_image(&format!("{}:abc123", reg.repository().unwrap()))
        .await
        .unwrap_err();
    // A refusal is not retried: the token endpoint was asked once.
    assert_eq!(fake.count("GET /v2/token"), before + 1);
    assert!(!e.is_transient(), "{e:?}");
    assert!(e.is_refusal(), "expected a refusal, got {e:?}");
    let msg = &e.to_string();
    assert!(
        msg.starts_with(&format!(
            "registry {} refused the credentials of user oauth2accesstoken",
            fake.host
        )),
        "{msg}"
    );
    assert!(msg.contains("unauthorized: failed authentication"), "{msg}");
    assert!(!msg.contains("ya29"), "{msg}");
}

#[tokio::test]
async fn gcr_transient_failures_are_retried_until_the_registry_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, env) = setup(dir.path()).await;
    let reg = GcrRegistry::connect(&cfg(None), &env, Some(&fake.host))
        .await
        .unwrap();
    let image = format!("{}:abc123", reg.repository().unwrap());

    // Google's token endpoint is down for one request: the credentials come anyway.
    fake.fail("POST /token", 503, 1);
    reg.auth().await.unwrap().unwrap();
    assert_eq!(fake.count("POST /token"), 2, "asked again after the 503");

    // The registry's token endpoint answers 503 twice, then a token.
    fake.fail("GET /v2/token", 503, 2);
    assert!(reg.has_image(&image).await.unwrap());
    assert_eq!(fake.count("GET /v2/token"), 3);

    // The manifest HEAD answers 502 once.
    let head = "HEAD /v2/sa-project/ml/train/manifests/abc123";
    let heads = fake.count(head);
    fake.fail(head, 502, 1);
    assert!(reg.has_image(&image).await.unwrap());
    // 502, then the challenge, then the answer with the token.
    assert_eq!(fake.count(head), heads + 3);

    // Down for good: the check gives up after RETRY_ATTEMPTS tries, with the last
    // status, and says it is transient (the builder then builds anyway).
    let tokens = fake.count("GET /v2/token");
    fake.fail("GET /v2/token", 503, 1000);
    let e = reg.has_image(&image).await.unwrap_err();
    assert!(e.is_transient() && !e.is_refusal(), "{e:?}");
    assert!(
        matches!(&e, RegistryError::Status { status: 503, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(&format!(
            "the token endpoint http://{}/v2/token of registry {} answered HTTP 503",
            fake.host, fake.host
        )),
        "{e}"
    );
    assert_eq!(
        fake.count("GET /v2/token"),
        tokens + RETRY_ATTEMPTS as usize
    );
    assert_eq!(fake.problems(), Vec::<String>::new());
}

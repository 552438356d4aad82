//! The ACR registry against in-process fakes of Azure AD and of ACR's token exchange
//! (`/oauth2/exchange`, `/oauth2/token`) and Distribution API, wire-faithful to
//! ACR's documented AAD flow (see `registry_fakes`).

mod registry_fakes;

use hoist_agent::config::AcrRegistry as AcrConfig;
use hoist_agent::environments::Ambient;
use hoist_agent::environments::azure::AzureEnvironment;
use hoist_agent::registries::Registry;
use hoist_agent::registries::acr::{ACR_USER, AcrRegistry};
use registry_fakes::{RegistryFlavor, Server, closed_port};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0c1b2a3d-1111-2222-3333-444455556666";
const SECRET: &str = "s3cr3t~value.from.portal";

fn cfg() -> AcrConfig {
    AcrConfig {
        registry: "myregistry".into(),
        repository: "hoist/jobs".into(),
    }
}

/// A fake that is Azure AD and the registry at once.
async fn fake() -> Server {
    Server::start(|f| {
        f.aad_clients
            .get_mut()
            .unwrap()
            .push((TENANT.into(), CLIENT.into(), SECRET.into()));
        *f.registry_flavor.get_mut().unwrap() = Some(RegistryFlavor::Acr);
        f.manifests
            .get_mut()
            .unwrap()
            .insert("hoist/jobs:abc123".into());
    })
    .await
}

fn env(authority: &str, secret: &str) -> AzureEnvironment {
    let imds = format!("http://{}", closed_port());
    AzureEnvironment::new(&Ambient::new(
        [
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT),
            ("AZURE_CLIENT_SECRET", secret),
            ("AZURE_AUTHORITY_HOST", authority),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.as_str()),
        ],
        None,
    ))
    .unwrap()
}

#[tokio::test]
async fn acr_uri_from_config() {
    let f = fake().await;
    let reg = AcrRegistry::connect(&cfg(), &env(&f.base, SECRET), None).unwrap();
    assert_eq!(reg.kind(), "acr");
    assert_eq!(
        reg.repository().as_deref(),
        Some("myregistry.azurecr.io/hoist/jobs")
    );
}

#[tokio::test]
async fn acr_exchanges_the_aad_token_and_checks_manifests_with_an_acr_access_token() {
    let f = fake().await;
    let reg = AcrRegistry::connect(&cfg(), &env(&f.base, SECRET), Some(&f.host)).unwrap();
    let repo = reg.repository().unwrap();
    assert_eq!(repo, format!("{}/hoist/jobs", f.host));

    let auth = reg.auth().await.unwrap().unwrap();
    assert_eq!(auth.server, f.host);
    assert_eq!(auth.username, ACR_USER);
    assert!(auth.password.expose().starts_with("acr-refresh-"));
    assert!(!format!("{auth:?}").contains(auth.password.expose()));
    assert!(!format!("{reg:?}").contains(auth.password.expose()));

    assert!(reg.has_image(&format!("{repo}:abc123")).await.unwrap());
    assert!(!reg.has_image(&format!("{repo}:nope")).await.unwrap());

    let requests = f.requests.lock().unwrap().clone();
    let count = |r: &str| requests.iter().filter(|x| *x == r).count();
    assert_eq!(count(&format!("POST /{TENANT}/oauth2/v2.0/token")), 1);
    assert_eq!(
        count("POST /oauth2/exchange"),
        1,
        "the refresh token is cached"
    );
    assert_eq!(count("POST /oauth2/token"), 2, "{requests:?}");
    assert_eq!(
        count("HEAD /v2/hoist/jobs/manifests/abc123"),
        2,
        "{requests:?}"
    );
    assert_eq!(f.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn acr_refuses_an_aad_token_it_does_not_know() {
    // Azure AD is one fake, the registry another that knows none of its tokens: the
    // exchange answers 401.
    let ad = fake().await;
    let registry = fake().await;
    let reg = AcrRegistry::connect(&cfg(), &env(&ad.base, SECRET), Some(&registry.host)).unwrap();
    let e = reg.auth().await.unwrap_err();
    assert!(e.is_refusal(), "expected a refusal, got {e:?}");
    assert_eq!(
        registry.count("POST /oauth2/exchange"),
        1,
        "a refusal is not retried"
    );
    let msg = &e.to_string();
    assert!(
        msg.starts_with(&format!(
            "registry {} refused the Azure AD token of environment variables",
            registry.host
        )),
        "{msg}"
    );
    assert!(
        msg.contains("HTTP 401 Unauthorized: UNAUTHORIZED: Invalid AAD access token"),
        "{msg}"
    );
    assert!(!msg.contains("aad-"), "{msg}");
}

#[tokio::test]
async fn acr_with_a_wrong_client_secret_is_an_auth_error() {
    let f = fake().await;
    let reg = AcrRegistry::connect(&cfg(), &env(&f.base, "not-the-secret"), Some(&f.host)).unwrap();
    let e = reg
        .has_image(&format!("{}/hoist/jobs:abc123", f.host))
        .await
        .unwrap_err();
    assert!(e.is_refusal(), "expected a refusal, got {e:?}");
    let msg = &e.to_string();
    assert!(msg.contains("invalid_client"), "{msg}");
    assert!(!msg.contains("not-the-secret"), "{msg}");
}

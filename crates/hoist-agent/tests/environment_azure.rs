//! The azure environment's default credential, against in-process fakes of Azure AD's
//! v2 token endpoint and of IMDS managed identity (see `registry_fakes`).

mod registry_fakes;

use hoist_agent::config::{EnvironmentConfig, EnvironmentType};
use hoist_agent::environments::azure::{ARM_SCOPE, AzureEnvironment};
use hoist_agent::environments::{Ambient, EnvError, Environment, from_config_with};
use registry_fakes::{Server, closed_port};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0c1b2a3d-1111-2222-3333-444455556666";
const SECRET: &str = "s3cr3t~value.from.portal";

async fn aad() -> Server {
    Server::start(|f| {
        f.aad_clients
            .get_mut()
            .unwrap()
            .push((TENANT.into(), CLIENT.into(), SECRET.into()));
    })
    .await
}

fn client_secret_env(fake: &Server, secret: &str, imds: &str) -> Ambient {
    Ambient::new(
        [
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT),
            ("AZURE_CLIENT_SECRET", secret),
            ("AZURE_AUTHORITY_HOST", fake.base.as_str()),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds),
        ],
        None,
    )
}

#[tokio::test]
async fn azure_client_secret_from_the_environment() {
    let fake = aad().await;
    let nothing = format!("http://{}", closed_port());
    let env = from_config_with(
        &EnvironmentConfig::Azure,
        &client_secret_env(&fake, SECRET, &nothing),
    )
    .await
    .unwrap();
    assert_eq!(env.kind(), EnvironmentType::Azure);
    let v = env.verify().await.unwrap();
    assert_eq!(
        v.principal.as_deref(),
        Some(format!("client {CLIENT} in tenant {TENANT}").as_str())
    );
    assert!(
        v.credentials_from.starts_with("environment variables"),
        "{v}"
    );
    let azure = env.as_any().downcast_ref::<AzureEnvironment>().unwrap();
    let (t, _) = azure.token(ARM_SCOPE).await.unwrap();
    assert!(t.expose().starts_with("aad-"));
    assert_eq!(fake.issued(), 1, "verify's token is reused from the cache");
    assert_eq!(
        fake.requests.lock().unwrap().clone(),
        vec![format!("POST /{TENANT}/oauth2/v2.0/token")]
    );
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn azure_wrong_client_secret_is_refused_without_trying_further() {
    let fake = aad().await;
    let nothing = format!("http://{}", closed_port());
    let env =
        AzureEnvironment::new(&client_secret_env(&fake, "wrong-secret-value", &nothing)).unwrap();
    let e = env.verify().await.unwrap_err();
    let EnvError::Refused { message: msg, .. } = &e else {
        panic!("expected Refused, got {e:?}")
    };
    assert!(
        msg.starts_with("azure: the credentials from environment variables"),
        "{msg}"
    );
    assert!(
        msg.contains("401 Unauthorized: invalid_client: AADSTS7000215"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-secret-value"), "{msg}");
    // Managed identity was not tried after the refusal.
    assert!(
        !fake
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("/metadata/")),
    );
}

#[tokio::test]
async fn azure_managed_identity_from_imds() {
    let fake = Server::start(|f| *f.azure_imds.get_mut().unwrap() = true).await;
    let env = AzureEnvironment::new(&Ambient::new(
        [("AZURE_POD_IDENTITY_AUTHORITY_HOST", fake.base.as_str())],
        None,
    ))
    .unwrap();
    let v = env.verify().await.unwrap();
    assert_eq!(
        v.credentials_from,
        format!("managed identity (IMDS at {})", fake.base)
    );
    assert_eq!(
        v.principal.as_deref(),
        Some("system-assigned managed identity")
    );
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn azure_without_credentials_names_every_source_tried() {
    let nothing = format!("http://{}", closed_port());
    let env = AzureEnvironment::new(&Ambient::new(
        [("AZURE_POD_IDENTITY_AUTHORITY_HOST", nothing.as_str())],
        None,
    ))
    .unwrap();
    let e = env.verify().await.unwrap_err();
    let EnvError::NoCredentials { message: msg } = &e else {
        panic!("expected NoCredentials, got {e:?}")
    };
    eprintln!("{msg}");
    assert!(msg.starts_with("azure: no credentials: tried environment variables (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH): not set; workload identity (AZURE_FEDERATED_TOKEN_FILE): not set; managed identity (IMDS at "), "{msg}");
    assert!(
        msg.contains(&format!("IMDS at {nothing}): unreachable (")),
        "{msg}"
    );

    // An IMDS that answers "Identity not found" is the same: no credentials.
    let fake = Server::start(|_| {}).await;
    let env = AzureEnvironment::new(&Ambient::new(
        [("AZURE_POD_IDENTITY_AUTHORITY_HOST", fake.base.as_str())],
        None,
    ))
    .unwrap();
    let e = env.verify().await.unwrap_err();
    assert!(
        matches!(&e, EnvError::NoCredentials { message: m } if m.contains("Identity not found")),
        "{e:?}"
    );
}

#[tokio::test]
async fn azure_workload_identity_sends_the_federated_token_as_client_assertion() {
    // The fake AD accepts only client secrets, so the assertion is refused: what is
    // checked here is that the workload-identity source is chosen and its refusal
    // reported with the source's name.
    let fake = aad().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.e30.sig").unwrap();
    let env = AzureEnvironment::new(&Ambient::new(
        [
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AZURE_AUTHORITY_HOST", fake.base.as_str()),
        ],
        None,
    ))
    .unwrap();
    let e = env.verify().await.unwrap_err();
    assert!(
        matches!(&e, EnvError::Refused { message: m, .. } if m.starts_with("azure: the credentials from workload identity (AZURE_FEDERATED_TOKEN_FILE) were refused")),
        "{e:?}"
    );
}

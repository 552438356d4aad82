//! The gcp environment's application default credentials, against an in-process fake
//! of Google's OAuth2 token endpoint and of the metadata server (no GCP emulator
//! exists here). The fake checks the JWT bearer grant as Google does: RS256 signature
//! against the service account's public key, `iss`, `aud` = the token URI, the scope,
//! and a short lifetime.

mod registry_fakes;

use std::path::Path;

use hoist_agent::config::{EnvironmentConfig, EnvironmentType};
use hoist_agent::environments::gcp::GcpEnvironment;
use hoist_agent::environments::{Ambient, EnvError, Environment, from_config_with};
use registry_fakes::{Server, closed_port, rsa_key};
use serde_json::json;

const EMAIL: &str = "hoist-agent@sa-project.iam.gserviceaccount.com";

fn write_json(dir: &Path, name: &str, v: &serde_json::Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p.display().to_string()
}

fn service_account(fake: &Server, pem: &str) -> serde_json::Value {
    json!({
        "type": "service_account",
        "project_id": "sa-project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "111111111111111111111",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": format!("{}/token", fake.base),
    })
}

async fn google(public_key: Vec<u8>) -> Server {
    Server::start(|f| {
        *f.google_public_key.get_mut().unwrap() = Some(public_key);
        *f.google_email.get_mut().unwrap() = EMAIL.to_string();
    })
    .await
}

#[tokio::test]
async fn gcp_service_account_key_gets_a_token_with_the_jwt_bearer_grant() {
    let (pem, public) = rsa_key();
    let fake = google(public).await;
    let dir = tempfile::tempdir().unwrap();
    let key = write_json(dir.path(), "sa.json", &service_account(&fake, &pem));
    let ambient = Ambient::new(
        [("GOOGLE_APPLICATION_CREDENTIALS", key.as_str())],
        Some(dir.path().to_path_buf()),
    );
    let env = from_config_with(
        &EnvironmentConfig::Gcp {
            region: "us-central1".into(),
            project: None,
        },
        &ambient,
    )
    .await
    .unwrap();
    assert_eq!(env.kind(), EnvironmentType::Gcp);
    let v = env.verify().await.unwrap();
    assert_eq!(v.principal.as_deref(), Some(EMAIL));
    assert_eq!(
        v.credentials_from,
        format!("GOOGLE_APPLICATION_CREDENTIALS ({key})")
    );

    let gcp = env.as_any().downcast_ref::<GcpEnvironment>().unwrap();
    let t1 = gcp.access_token().await.unwrap();
    let t2 = gcp.access_token().await.unwrap();
    assert!(t1.expose().starts_with("ya29.sa-"));
    assert_eq!(t1, t2, "the token is cached until it nears expiry");
    assert_eq!(fake.issued(), 1);
    assert_eq!(gcp.project().await.unwrap(), "sa-project");
    assert_eq!(fake.problems(), Vec::<String>::new());
    // Debug output never shows the token or the key.
    let dbg = format!("{gcp:?} {t1:?}");
    assert!(
        !dbg.contains("ya29") && !dbg.contains("PRIVATE KEY"),
        "{dbg}"
    );
}

#[tokio::test]
async fn gcp_key_the_token_endpoint_does_not_know_is_refused_naming_the_account() {
    let (pem, _) = rsa_key();
    let (_, other_public) = rsa_key();
    let fake = google(other_public).await;
    let dir = tempfile::tempdir().unwrap();
    let key = write_json(dir.path(), "sa.json", &service_account(&fake, &pem));
    let env = GcpEnvironment::new(
        "us-central1",
        Some("p"),
        &Ambient::new([("GOOGLE_APPLICATION_CREDENTIALS", key.as_str())], None),
    )
    .unwrap();
    let e = env.verify().await.unwrap_err();
    let EnvError::Refused { message: msg, .. } = &e else {
        panic!("expected Refused, got {e:?}")
    };
    assert!(
        msg.contains("invalid_grant: Invalid JWT Signature."),
        "{msg}"
    );
    assert!(msg.contains(EMAIL) && msg.contains(&key), "{msg}");
    assert!(!msg.contains("PRIVATE KEY"), "{msg}");
}

#[tokio::test]
async fn gcp_gcloud_user_credentials_from_the_adc_file_in_home() {
    let fake = Server::start(|f| {
        *f.google_user.get_mut().unwrap() = Some((
            "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com".into(),
            "d-FL95Q19q7MQmFpd7hHD0Ty".into(),
            "1//0refresh-token".into(),
        ));
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let gcloud = home.path().join(".config/gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    let path = write_json(
        &gcloud,
        "application_default_credentials.json",
        &json!({
            "type": "authorized_user",
            "client_id": "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com",
            "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty",
            "refresh_token": "1//0refresh-token",
            "quota_project_id": "user-project",
            "token_uri": format!("{}/token", fake.base),
        }),
    );
    let env = GcpEnvironment::new(
        "europe-west4",
        None,
        &Ambient::new(
            Vec::<(String, String)>::new(),
            Some(home.path().to_path_buf()),
        ),
    )
    .unwrap();
    let v = env.verify().await.unwrap();
    assert_eq!(v.credentials_from, format!("the gcloud ADC file {path}"));
    assert_eq!(env.project().await.unwrap(), "user-project");
    assert!(
        env.access_token()
            .await
            .unwrap()
            .expose()
            .starts_with("ya29.user-")
    );
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn gcp_metadata_server_when_no_file_is_present() {
    let fake = Server::start(|f| {
        *f.metadata_account.get_mut().unwrap() =
            Some("123-compute@developer.gserviceaccount.com".into());
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let env = GcpEnvironment::new(
        "us-central1",
        None,
        &Ambient::new(
            [("GCE_METADATA_HOST", fake.host.as_str())],
            Some(home.path().to_path_buf()),
        ),
    )
    .unwrap();
    let v = env.verify().await.unwrap();
    assert_eq!(
        v.principal.as_deref(),
        Some("123-compute@developer.gserviceaccount.com")
    );
    assert_eq!(
        v.credentials_from,
        format!("the metadata server at {}", fake.host)
    );
    assert_eq!(env.project().await.unwrap(), "fake-gce-project");
}

#[tokio::test]
async fn gcp_without_credentials_names_every_source_tried() {
    let home = tempfile::tempdir().unwrap();
    let nothing = closed_port();
    let env = GcpEnvironment::new(
        "us-central1",
        Some("p"),
        &Ambient::new(
            [("GCE_METADATA_HOST", nothing.as_str())],
            Some(home.path().to_path_buf()),
        ),
    )
    .unwrap();
    let e = env.verify().await.unwrap_err();
    let EnvError::NoCredentials { message: msg } = &e else {
        panic!("expected NoCredentials, got {e:?}")
    };
    eprintln!("{msg}");
    assert!(msg.starts_with("gcp: no credentials: tried "), "{msg}");
    assert!(
        msg.contains("GOOGLE_APPLICATION_CREDENTIALS: not set; "),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "the gcloud ADC file {}: not found; ",
            home.path()
                .join(".config/gcloud/application_default_credentials.json")
                .display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("the metadata server at {nothing}: unreachable (")),
        "{msg}"
    );
}

#[tokio::test]
async fn gcp_unsupported_or_broken_credential_files_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fed = write_json(
        dir.path(),
        "fed.json",
        &json!({"type": "external_account", "audience": "//iam.googleapis.com/x"}),
    );
    let e = GcpEnvironment::new(
        "us-central1",
        None,
        &Ambient::new([("GOOGLE_APPLICATION_CREDENTIALS", fed.as_str())], None),
    )
    .unwrap_err();
    assert!(
        matches!(&e, EnvError::Config { message: m, .. } if m.contains("external_account") && m.contains(&fed)),
        "{e:?}"
    );

    let missing = dir.path().join("nope.json").display().to_string();
    let e = GcpEnvironment::new(
        "us-central1",
        None,
        &Ambient::new([("GOOGLE_APPLICATION_CREDENTIALS", missing.as_str())], None),
    )
    .unwrap_err();
    assert!(
        matches!(&e, EnvError::File { message: m, source } if m.contains("cannot be read") && m.contains(&missing) && source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );

    // A token URI in plain HTTP to a remote host is refused (the JWT would travel in
    // the clear).
    let (pem, _) = rsa_key();
    let evil = write_json(
        dir.path(),
        "evil.json",
        &json!({"type": "service_account", "client_email": EMAIL, "private_key": pem,
                "token_uri": "http://token.example.com/token"}),
    );
    let e = GcpEnvironment::new(
        "us-central1",
        None,
        &Ambient::new([("GOOGLE_APPLICATION_CREDENTIALS", evil.as_str())], None),
    )
    .unwrap_err();
    assert!(
        matches!(&e, EnvError::Config { message: m, .. } if m.contains("plain HTTP to a remote host")),
        "{e:?}"
    );
}

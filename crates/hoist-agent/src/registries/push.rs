//! Pushing (and pulling) images through the Docker Engine API, with the registry's
//! credentials in bollard's credentials argument, which becomes the
//! `X-Registry-Auth` header: never a command line, a log line or an error message.
//!
//! Progress goes to the run's [`LogSink`] concisely: one line when the push starts,
//! one per layer when it reaches its final status (`Pushed`, `Layer already exists`,
//! `Mounted from …`), none for `Preparing`/`Waiting` or the byte-count ticks, and the
//! digest at the end. Pulls likewise (`Pull complete`, `Already exists`).

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{CreateImageOptions, PushImageOptions};
use futures::StreamExt;

use super::oci::{IDENTITY_TOKEN_USER, split_reference};
use super::{RegistryAuth, RegistryError};
use crate::logs::LogSink;

/// Statuses that come once per progress tick, or once per layer before anything has
/// happened; not worth a log line each.
const QUIET: &[&str] = &[
    "Preparing",
    "Waiting",
    "Pushing",
    "Downloading",
    "Extracting",
    "Verifying Checksum",
    "Pulling fs layer",
];

fn credentials(auth: Option<&RegistryAuth>) -> Option<DockerCredentials> {
    auth.map(|a| {
        if a.username == IDENTITY_TOKEN_USER {
            DockerCredentials {
                identitytoken: Some(a.password.expose().to_string()),
                serveraddress: Some(a.server.clone()),
                ..Default::default()
            }
        } else {
            DockerCredentials {
                username: Some(a.username.clone()),
                password: Some(a.password.expose().to_string()),
                serveraddress: Some(a.server.clone()),
                ..Default::default()
            }
        }
    })
}

/// `HOST/REPO:TAG` → (`HOST`, `HOST/REPO`, `TAG`).
fn parts(image: &str) -> Result<(String, String, String), RegistryError> {
    let (host, repo, reference) = split_reference(image)?;
    if reference.contains(':') {
        return Err(RegistryError::Config(format!(
            "image `{image}` names a digest; a push or pull needs a tag"
        )));
    }
    Ok((host.clone(), format!("{host}/{repo}"), reference))
}

/// An error the daemon reported for `op` (`push`, `pull`) of `image` to/from `host`;
/// `refused` when the registry behind it refused the credentials.
fn daemon_error(op: &str, image: &str, host: &str, e: bollard::errors::Error) -> RegistryError {
    use bollard::errors::Error;
    let reason = match &e {
        Error::DockerStreamError { error } => error.clone(),
        Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let lower = reason.to_ascii_lowercase();
    let auth = [
        "unauthorized",
        "authentication required",
        "denied",
        "no basic auth credentials",
        "401",
        "403",
    ]
    .iter()
    .any(|w| lower.contains(w));
    RegistryError::Daemon {
        message: format!("{op} of {image} (registry {host}) failed: {reason}"),
        refused: auth,
        source: e,
    }
}

/// The status of one progress item of a push or pull (`(error message, status)` as
/// the daemon sent them), or the daemon's error.
fn progress(
    op: &str,
    image: &str,
    host: &str,
    item: Result<(Option<String>, Option<String>), bollard::errors::Error>,
) -> Result<Option<String>, RegistryError> {
    match item {
        Err(e) => Err(daemon_error(op, image, host, e)),
        Ok((Some(error), _)) => Err(daemon_error(
            op,
            image,
            host,
            bollard::errors::Error::DockerStreamError { error },
        )),
        Ok((None, status)) => Ok(status),
    }
}

/// Pushes the local image `image` (`HOST[:PORT]/REPO:TAG`) to its registry.
pub async fn push(
    docker: &Docker,
    image: &str,
    auth: Option<&RegistryAuth>,
    sink: &LogSink,
) -> Result<(), RegistryError> {
    let (host, name, tag) = parts(image)?;
    sink.system(&format!("pushing {image}"));
    let mut stream = docker.push_image(
        &name,
        Some(PushImageOptions {
            tag: Some(tag),
            ..Default::default()
        }),
        credentials(auth),
    );
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let item = item.map(|i| (i.error_detail.and_then(|d| d.message), i.status));
        let Some(status) = progress("push", image, &host, item)? else {
            continue;
        };
        if let Some(i) = status.find("digest: ") {
            digest = Some(status[i + "digest: ".len()..].to_string());
            continue;
        }
        if QUIET.iter().any(|q| status.starts_with(q)) || status.starts_with("The push refers to") {
            continue;
        }
        // Once per layer: `Pushed`, `Layer already exists`, `Mounted from …`. (The
        // Engine API's layer id is not in bollard's `PushImageInfo`.)
        sink.system(&format!("push {image}: {status}"));
    }
    match digest {
        Some(d) => sink.system(&format!("pushed {image} ({d})")),
        None => sink.system(&format!("pushed {image}")),
    }
    Ok(())
}

/// Pulls `image` (`HOST[:PORT]/REPO:TAG`) into the daemon with the registry's
/// credentials (a run starting from a pushed image on another daemon, or after the
/// local copy was removed).
pub async fn pull(
    docker: &Docker,
    image: &str,
    auth: Option<&RegistryAuth>,
    sink: &LogSink,
) -> Result<(), RegistryError> {
    let (host, name, tag) = parts(image)?;
    sink.system(&format!("pulling {image}"));
    let mut stream = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(name),
            tag: Some(tag),
            ..Default::default()
        }),
        None,
        credentials(auth),
    );
    while let Some(item) = stream.next().await {
        let item = item.map(|i| (i.error_detail.and_then(|d| d.message), i.status));
        let Some(status) = progress("pull", image, &host, item)? else {
            continue;
        };
        if QUIET.iter().any(|q| status.starts_with(q))
            || status.starts_with("Digest:")
            || status.starts_with("Status:")
            || status.starts_with("Pulling from")
        {
            continue;
        }
        // Once per layer: `Pull complete`, `Already exists`.
        sink.system(&format!("pull {image}: {status}"));
    }
    sink.system(&format!("pulled {image}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::environments::Secret;

    #[test]
    fn identity_tokens_become_identitytoken() {
        let a = RegistryAuth {
            server: "x.azurecr.io".into(),
            username: IDENTITY_TOKEN_USER.into(),
            password: Secret::new("rt"),
        };
        let c = credentials(Some(&a)).unwrap();
        assert_eq!(c.identitytoken.as_deref(), Some("rt"));
        assert!(c.username.is_none() && c.password.is_none());
        let a = RegistryAuth {
            server: "127.0.0.1:5001".into(),
            username: "hoist".into(),
            password: Secret::new("pw"),
        };
        let c = credentials(Some(&a)).unwrap();
        assert_eq!(c.username.as_deref(), Some("hoist"));
        assert_eq!(c.serveraddress.as_deref(), Some("127.0.0.1:5001"));
    }

    #[test]
    fn auth_errors_are_classified() {
        let e = bollard::errors::Error::DockerStreamError {
            error: "unauthorized: authentication required".into(),
        };
        let r = daemon_error("push", "127.0.0.1:5001/a:b", "127.0.0.1:5001", e);
        assert!(r.is_refusal() && !r.is_transient());
        assert!(
            std::error::Error::source(&r).is_some(),
            "the daemon's error is kept"
        );
        assert_eq!(
            r.to_string(),
            "push of 127.0.0.1:5001/a:b (registry 127.0.0.1:5001) failed: unauthorized: authentication required"
        );
        assert!(parts("127.0.0.1:5000/a@sha256:00").is_err());
    }
}

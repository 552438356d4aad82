//! No registry: images are built into, and run from, the agent's own Docker daemon.
//!
//! [`LocalRegistry::repository`] is `None`, so the docker builder tags images
//! `hoist-build:<hash>` and pushes nothing; [`LocalRegistry::has_image`] inspects the
//! image on the daemon (`GET /images/{name}/json`). This only works when the runs are
//! started by the same daemon (the docker runner on the agent's host): a Kubernetes or
//! cloud runner needs a registry.

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;

use super::{Registry, RegistryAuth, RegistryError};

/// Images stay in the local Docker daemon.
#[derive(Clone)]
pub struct LocalRegistry {
    docker: Docker,
}

impl std::fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRegistry").finish_non_exhaustive()
    }
}

impl LocalRegistry {
    /// The daemon the docker builder builds into (share the runner's connection,
    /// whose API version is already negotiated).
    pub fn new(docker: Docker) -> LocalRegistry {
        LocalRegistry { docker }
    }
}

#[async_trait]
impl Registry for LocalRegistry {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn repository(&self) -> Option<String> {
        None
    }

    async fn auth(&self) -> Result<Option<RegistryAuth>, RegistryError> {
        Ok(None)
    }

    async fn has_image(&self, image: &str) -> Result<bool, RegistryError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(RegistryError::Daemon {
                message: format!("cannot ask the local Docker daemon about image {image}: {e}"),
                refused: false,
                source: e,
            }),
        }
    }
}

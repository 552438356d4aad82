//! The cluster the runner talks to: a kube-rs client configured the way kube-rs infers
//! it, narrowed by the agent's `kubernetes` settings.
//!
//! Order (the first that loads wins; every failure is kept for the error):
//! 1. `kubernetes.kubeconfig` when set: that file only (with `kubernetes.context`).
//! 2. `KUBECONFIG`, else `~/.kube/config` (with `kubernetes.context`).
//! 3. The in-cluster service account (`KUBERNETES_SERVICE_HOST`/`_PORT`, the token and
//!    CA under `/var/run/secrets/kubernetes.io/serviceaccount/`), unless a kubeconfig or
//!    a context was asked for explicitly.
//!
//! The runs' default namespace: `kubernetes.namespace`, else the kubeconfig context's
//! (or the in-cluster namespace file), else `default`.

use std::path::PathBuf;

use kube::config::{Config, KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesSettings;

/// One way of configuring the client that did not work.
#[derive(Debug)]
pub struct Attempt {
    /// `kubeconfig /path (context c)`, `in-cluster service account`.
    pub what: String,
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

/// Why the runner has no cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No configuration loaded: every attempt, in order, with its cause.
    #[error("no Kubernetes client configuration works: {}", list(.attempts))]
    NoConfig { attempts: Vec<Attempt> },
    /// A configuration loaded, and the client could not be built from it.
    #[error("the Kubernetes client cannot be built from {what}: {source}")]
    Client {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer (or refused the version request).
    #[error("the Kubernetes API server at {url} did not answer: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer within the time the caller gave it.
    #[error("the Kubernetes API server at {url} ({what}) did not answer within {}s", .within.as_secs_f64())]
    Timeout {
        url: String,
        what: String,
        within: std::time::Duration,
    },
}

impl ClusterError {
    /// An unreachable API server may answer later; a configuration does not repair
    /// itself.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClusterError::Unreachable { .. } | ClusterError::Timeout { .. }
        )
    }
}

fn list(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{}: {}", a.what, chain(a.error.as_ref())))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error with its causes, `a: b: c`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A configured client and where runs go by default.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    /// The namespace of runs whose queue config names none.
    pub default_namespace: String,
    /// Where the configuration came from (for messages).
    pub source: String,
    /// The API server's URL.
    pub url: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.url)
            .field("default_namespace", &self.default_namespace)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Loads the client configuration (see the module documentation). Does not talk to
    /// the API server: [`Cluster::check`] does.
    pub async fn connect(settings: &KubernetesSettings) -> Result<Cluster, ClusterError> {
        let (mut config, what) = load(settings).await?;
        // kube-rs retries 429/503/504 inside each request by default (15 times, with a
        // backoff growing to minutes, POSTs included): a transient failure then never
        // reaches the runner's callers, which have their own rules for it (the run
        // task retries a start within `start_timeout` and says so in the run's log; the
        // watchers back off and relist; log followers reconnect).
        config.default_retry = false;
        let url = config.cluster_url.to_string();
        let default_namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|source| ClusterError::Client {
            what: what.clone(),
            source,
        })?;
        Ok(Cluster {
            client,
            default_namespace,
            source: what,
            url,
        })
    }

    /// Asks the API server for its version: `v1.20.2`.
    /// [`Cluster::connect`], then [`Cluster::check`] within `within`: the cluster and
    /// the API server's version.
    pub async fn connect_checked(
        settings: &KubernetesSettings,
        within: std::time::Duration,
    ) -> Result<(Cluster, String), ClusterError> {
        let cluster = Cluster::connect(settings).await?;
        match tokio::time::timeout(within, cluster.check()).await {
            Ok(Ok(version)) => Ok((cluster, version)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClusterError::Timeout {
                url: cluster.url.clone(),
                what: cluster.source.clone(),
                within,
            }),
        }
    }

    pub async fn check(&self) -> Result<String, ClusterError> {
        let v =
            self.client
                .apiserver_version()
                .await
                .map_err(|source| ClusterError::Unreachable {
                    url: self.url.clone(),
                    source,
                })?;
        Ok(v.git_version)
    }
}

async fn load(settings: &KubernetesSettings) -> Result<(Config, String), ClusterError> {
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..KubeConfigOptions::default()
    };
    let ctx_note = settings
        .context
        .as_deref()
        .map(|c| format!(" (context {c})"))
        .unwrap_or_default();
    let mut attempts = Vec::new();
    let explicit = match &settings.kubeconfig {
        Some(p) => Some((p.clone(), format!("kubeconfig {}{ctx_note}", p.display()))),
        None => std::env::var_os("KUBECONFIG")
            .filter(|v| !v.is_empty())
            .map(|v| {
                let shown = PathBuf::from(&v);
                (
                    shown.clone(),
                    format!("KUBECONFIG={}{ctx_note}", shown.display()),
                )
            }),
    };
    let (file, what) = match explicit {
        Some(x) => (Some(x.0), x.1),
        None => match home_kubeconfig() {
            Some(p) => {
                let what = format!("kubeconfig {}{ctx_note}", p.display());
                (Some(p), what)
            }
            None => (None, "~/.kube/config (no home directory)".to_string()),
        },
    };
    if let Some(path) = file {
        // KUBECONFIG may list several files (`a:b`); kube-rs merges them.
        let from_env = settings.kubeconfig.is_none() && std::env::var_os("KUBECONFIG").is_some();
        let read = tokio::task::spawn_blocking(move || {
            if from_env {
                Kubeconfig::from_env()
                    .and_then(|k| k.ok_or(kube::config::KubeconfigError::MissingClusterUrl))
            } else {
                Kubeconfig::read_from(&path)
            }
        })
        .await;
        match read {
            Ok(Ok(kc)) => match Config::from_custom_kubeconfig(kc, &options).await {
                Ok(c) => return Ok((c, what)),
                Err(e) => attempts.push(Attempt {
                    what,
                    error: Box::new(e),
                }),
            },
            Ok(Err(e)) => attempts.push(Attempt {
                what,
                error: Box::new(e),
            }),
            Err(e) => attempts.push(Attempt {
                what,
                error: Box::new(e),
            }),
        }
    } else {
        attempts.push(Attempt {
            what,
            error: "no file to read".into(),
        });
    }
    if settings.kubeconfig.is_some() || settings.context.is_some() {
        // Asked for a particular kubeconfig or context: in-cluster is not what was
        // meant.
        return Err(ClusterError::NoConfig { attempts });
    }
    let what = "in-cluster service account".to_string();
    match tokio::task::spawn_blocking(Config::incluster).await {
        Ok(Ok(c)) => Ok((c, what)),
        Ok(Err(e)) => {
            attempts.push(Attempt {
                what,
                error: Box::new(e),
            });
            Err(ClusterError::NoConfig { attempts })
        }
        Err(e) => {
            attempts.push(Attempt {
                what,
                error: Box::new(e),
            });
            Err(ClusterError::NoConfig { attempts })
        }
    }
}

fn home_kubeconfig() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".kube").join("config"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_kubeconfig_names_the_file_and_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let settings = KubernetesSettings {
            kubeconfig: Some(dir.path().join("nope.yaml")),
            context: Some("ctx".into()),
            ..KubernetesSettings::default()
        };
        let err = Cluster::connect(&settings).await.unwrap_err();
        let ClusterError::NoConfig { attempts } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            attempts.len(),
            1,
            "no in-cluster attempt when a file is named"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("nope.yaml") && msg.contains("context ctx"),
            "{msg}"
        );
        assert!(!err.is_transient());
    }
}

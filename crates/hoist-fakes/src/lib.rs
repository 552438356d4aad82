//! Scripted fakes of the cloud APIs nothing real can stand in for on a test machine:
//! SageMaker's training-job calls and CloudWatch Logs (`sagemaker`), Vertex AI's
//! CustomJob service, Cloud Logging's `entries:list` and Google's OAuth token endpoint
//! (`vertex`). moto covers SageMaker's happy path (the tests use it for that); these
//! cover what moto does not (stop, state sequences, spot interruptions, log paging,
//! the services' error bodies) and all of Vertex.
//!
//! Each fake is faithful to the wire protocol of exactly the calls hoist makes,
//! including their errors: the request shape is checked as the real service checks it,
//! and refusals come back in the service's own error shape and status. Every fake
//! serves on 127.0.0.1 (an ephemeral port), records every call ([`Call`]) so a test or
//! `hoist bench` can count them and time them, and stops when dropped.
//!
//! A dependency of `hoist` (for `hoist bench dispatch --resource sagemaker|vertex`) and a
//! dev-dependency of the crates whose tests use it; never of `hoist-agent` or
//! `hoist-server` (the tidy test checks).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

pub mod sagemaker;
pub mod vertex;

/// One call a fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// The operation (`CreateTrainingJob`, `customJobs.create`, `entries.list`, …).
    pub operation: String,
    /// The object it was about (a training job name, a custom job id), when it names one.
    pub target: Option<String>,
    /// The HTTP status the fake answered.
    pub status: u16,
}

/// The calls a fake received, shared with its handlers.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    /// Records a call.
    pub fn record(&self, operation: &str, target: Option<&str>, status: u16) {
        self.0.lock().expect("calls").push(Call {
            at: Utc::now(),
            operation: operation.to_string(),
            target: target.map(str::to_string),
            status,
        });
    }

    /// Every call so far, in order.
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().expect("calls").clone()
    }

    /// How many calls of `operation` so far.
    pub fn count(&self, operation: &str) -> usize {
        self.0
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }
}

/// An axum app served on 127.0.0.1, stopped when dropped.
pub struct Served {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Served {
    /// Serves `app` on an ephemeral port of 127.0.0.1 (on the current runtime).
    pub async fn start(app: axum::Router) -> std::io::Result<Served> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Served {
            addr,
            stop: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

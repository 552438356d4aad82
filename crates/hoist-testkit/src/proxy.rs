//! [`HoldingProxy`]: plain HTTP on 127.0.0.1 in front of the test cluster's API server,
//! forwarding every request with the admin kubeconfig's credentials (watches and log
//! streams included), except that it holds the requests a test chose ([`Hold`]) until
//! the test releases them. Point a runner or an agent at [`HoldingProxy::kubeconfig`].
//!
//! A held request is forwarded by a task of its own once released, whether or not its
//! client still waits for the answer: as a request the API server had already received
//! when its client gave up. That is the case a test of a start given up midway needs
//! (the object of the request in flight is created after the client went away).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{oneshot, watch};

/// The proxy; it stops when dropped (requests still held are then never forwarded).
pub struct HoldingProxy {
    url: String,
    kubeconfig: tempfile::NamedTempFile,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// The runtime of a proxy started from synchronous code.
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    client: kube::Client,
    holds: Mutex<Vec<Arc<Slot>>>,
}

/// Whether a request (its path, its query without the `?`) is the one to hold.
type RequestMatch = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

struct Slot {
    method: String,
    matches: RequestMatch,
    state: Mutex<SlotState>,
    /// `None` while held; `Some(true)`: forward it; `Some(false)`: never.
    go: watch::Sender<Option<bool>>,
}

#[derive(Default)]
struct SlotState {
    /// The held request (`METHOD /path?query`), once one matched.
    held: Option<String>,
    /// The API server's status for it, once forwarded.
    answer: Option<u16>,
}

/// One request held by the proxy: the first one matching its method, path and query
/// that arrives after [`HoldingProxy::hold`].
#[derive(Clone)]
pub struct Hold {
    slot: Arc<Slot>,
}

impl Hold {
    /// The held request (`METHOD /path?query`), once one arrived.
    pub fn held(&self) -> Option<String> {
        self.slot.state.lock().expect("hold").held.clone()
    }

    /// Forwards the held request (or the matching one still to come) to the API server.
    pub fn release(&self) {
        self.slot.go.send_replace(Some(true));
    }

    /// The API server's HTTP status for the held request, once it was forwarded and
    /// answered.
    pub fn answer(&self) -> Option<u16> {
        self.slot.state.lock().expect("hold").answer
    }
}

impl HoldingProxy {
    /// Starts the proxy on the current Tokio runtime, forwarding with the credentials
    /// of `kubeconfig`.
    pub async fn start(kubeconfig: &Path) -> HoldingProxy {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a client configuration from the kubeconfig");
        let client = kube::Client::try_from(config).expect("a kube client");
        let shared = Arc::new(Shared {
            client,
            holds: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = write_kubeconfig(&url);
        HoldingProxy {
            url,
            kubeconfig,
            shared,
            task,
            runtime: None,
        }
    }

    /// [`HoldingProxy::start`] from synchronous code: on a runtime of its own.
    pub fn start_blocking(kubeconfig: &Path) -> HoldingProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        let mut p = rt.block_on(HoldingProxy::start(kubeconfig));
        p.runtime = Some(rt);
        p
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig whose cluster is the proxy (no credentials: the proxy adds them),
    /// its context's namespace `default`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig.path().to_path_buf()
    }

    /// Holds the first request from now on whose method is `method` and whose path and
    /// query (without the `?`) satisfy `matches`, e.g. `|path, _| path.ends_with("/jobs")`.
    pub fn hold(
        &self,
        method: &str,
        matches: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> Hold {
        let (go, _) = watch::channel(None);
        let slot = Arc::new(Slot {
            method: method.to_string(),
            matches: Box::new(matches),
            state: Mutex::new(SlotState::default()),
            go,
        });
        self.shared.holds.lock().expect("holds").push(slot.clone());
        Hold { slot }
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        for s in self.shared.holds.lock().expect("holds").iter() {
            s.go.send_if_modified(|go| {
                let held = go.is_none();
                if held {
                    *go = Some(false);
                }
                held
            });
        }
        self.task.abort();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn write_kubeconfig(url: &str) -> tempfile::NamedTempFile {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "proxy", "cluster": {"server": url}}],
        "users": [{"name": "proxy", "user": {}}],
        "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy", "namespace": "default"}}],
        "current-context": "proxy",
    });
    let file = tempfile::Builder::new()
        .prefix("hoist-proxy-")
        .suffix(".kubeconfig")
        .tempfile()
        .expect("a temporary kubeconfig");
    std::fs::write(file.path(), config.to_string()).expect("write the kubeconfig");
    file
}

/// The slot that takes this request, if any (each takes one request).
fn take_slot(
    shared: &Shared,
    method: &str,
    uri: &axum::http::Uri,
    what: &str,
) -> Option<Arc<Slot>> {
    let (path, query) = (uri.path(), uri.query().unwrap_or(""));
    let holds = shared.holds.lock().expect("holds");
    let slot = holds.iter().find(|s| {
        s.method == method
            && (s.matches)(path, query)
            && s.state.lock().expect("hold").held.is_none()
    })?;
    slot.state.lock().expect("hold").held = Some(what.to_string());
    Some(slot.clone())
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let what = format!(
        "{} {}",
        parts.method,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let slot = take_slot(&shared, parts.method.as_str(), &parts.uri, &what);
    let mut out = axum::http::Request::builder()
        .method(parts.method)
        .uri(parts.uri);
    for (k, v) in &parts.headers {
        if k != axum::http::header::HOST && k != axum::http::header::AUTHORIZATION {
            out = out.header(k, v);
        }
    }
    let out = match out.body(kube::client::Body::from(body.to_vec())) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    // Forwarded by a task of its own: a held request reaches the API server once
    // released, even when its client has gone meanwhile.
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Some(slot) = &slot {
            let mut go = slot.go.subscribe();
            match go.wait_for(Option::is_some).await.map(|g| *g) {
                Ok(Some(true)) => {}
                _ => return,
            }
        }
        let r = shared.client.send(out).await;
        if let (Some(slot), Ok(resp)) = (&slot, &r) {
            slot.state.lock().expect("hold").answer = Some(resp.status().as_u16());
        }
        let _ = tx.send(r);
    });
    match rx.await {
        Ok(Ok(resp)) => resp.map(axum::body::Body::new),
        Ok(Err(e)) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the proxy stopped").into_response(),
    }
}

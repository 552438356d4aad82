//! The Kubernetes figures of `hoist bench dispatch --kubernetes`, against the cluster
//! of `KUBECONFIG` (or `~/.kube/config`):
//!
//! - dispatch latency: launch sent → the Job's container has started (it prints
//!   busybox's `$EPOCHREALTIME` as its first act, and the stamp comes back through the
//!   run's log), sequential launches on a `kubernetes` queue whose config is a Job;
//! - the floor: the same Job (same image, command, restart policy and backoff limit)
//!   created directly through the API by this process and measured the same way (the
//!   container's stamp minus the time the create was sent), one after each hoist run so
//!   that the machine's other load weighs on both alike;
//! - API requests per run: the agent talks to the cluster through a counting proxy in
//!   this process (plain HTTP on 127.0.0.1, forwarded with this process's credentials),
//!   so every request the runner makes is counted. Runs that last longer must not cost
//!   more requests (watches, not polling): the figure is given for the quick job and for
//!   a job that sleeps, side by side.
//!
//! Everything is created in a namespace of the bench's own, deleted at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hoist_client::Client;
use hoist_core::api::LaunchRequest;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use super::dispatch::{create_queue, dispatch, now_ns, parse_stamp};
use super::{Samples, Target, line, ms};

/// The container's command: its first act prints the time it started.
const STAMP: &str = "echo $EPOCHREALTIME";

/// Requests the agent sent to the API server, counted by the proxy.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    watches: AtomicU64,
    /// Requests by kind ([`request_kind`]).
    by_kind: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Counts {
    fn by_kind(&self) -> std::collections::BTreeMap<String, u64> {
        self.by_kind.lock().expect("counts").clone()
    }
}

/// A request's method, resource and flags, without names: `GET pods/log follow`,
/// `POST jobs`, `GET pods watch`, `GET /apis/batch/v1`.
fn request_kind(method: &str, path: &str, query: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut kind = match segs.iter().position(|s| *s == "namespaces") {
        Some(i) if segs.len() > i + 2 => {
            let mut k = segs[i + 2].to_string();
            if let Some(sub) = segs.get(i + 4) {
                k.push('/');
                k.push_str(sub);
            } else if segs.len() > i + 3 {
                k.push_str("/NAME");
            }
            k
        }
        _ => path.to_string(),
    };
    for flag in ["watch", "follow"] {
        if query
            .split('&')
            .any(|p| p == format!("{flag}=true") || p == format!("{flag}=1"))
        {
            kind.push(' ');
            kind.push_str(flag);
        }
    }
    format!("{method} {kind}")
}

#[derive(Clone)]
struct ProxyState {
    client: kube::Client,
    counts: Arc<Counts>,
}

/// The counting proxy: plain HTTP on 127.0.0.1, each request forwarded through `client`
/// (its credentials and TLS), the response streamed back (watches included).
struct Proxy {
    url: String,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(st): State<ProxyState>, req: Request) -> Response {
    st.counts.requests.fetch_add(1, Ordering::Relaxed);
    let query = req.uri().query().unwrap_or_default();
    *st.counts
        .by_kind
        .lock()
        .expect("counts")
        .entry(request_kind(req.method().as_str(), req.uri().path(), query))
        .or_default() += 1;
    if query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1")
    {
        st.counts.watches.fetch_add(1, Ordering::Relaxed);
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
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
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match st.client.send(out).await {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn start_proxy(client: kube::Client) -> anyhow::Result<Proxy> {
    let counts = Arc::new(Counts::default());
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(ProxyState {
            client,
            counts: counts.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Proxy { url, counts, task })
}

/// The Job both paths run: the queue's config, and (named) the floor's object.
fn job_config(ns: &str, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bench", "namespace": ns},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                }]
            }}
        }
    })
}

/// The same Job created directly: create sent → the container's stamp.
async fn floor(
    client: &kube::Client,
    ns: &str,
    image: &str,
    which: std::ops::Range<usize>,
) -> anyhow::Result<Samples> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut out = Samples::default();
    for i in which {
        let name = format!("floor-{i}");
        let mut obj = job_config(ns, image);
        obj["metadata"]["name"] = json!(name);
        obj["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["sh", "-c", STAMP]);
        let job: Job = serde_json::from_value(obj)?;
        let selector = format!("job-name={name}");
        let sent = now_ns();
        jobs.create(&PostParams::default(), &job).await?;
        // Watch the Job's pod until its container has ended, then read its log.
        let stream = watcher(pods.clone(), watcher::Config::default().labels(&selector));
        futures::pin_mut!(stream);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut pod_name = None;
        while let Some(ev) = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .context("the floor Job's pod did not end within 120 s")?
        {
            let pods_seen: Vec<Pod> = match ev? {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                _ => continue,
            };
            for p in pods_seen {
                let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
                    pod_name = p.metadata.name.clone();
                }
            }
            if pod_name.is_some() {
                break;
            }
        }
        let pod_name = pod_name.context("the floor Job's pod did not end")?;
        let log = pods.logs(&pod_name, &LogParams::default()).await?;
        let stamp = log
            .lines()
            .find_map(parse_stamp)
            .context("the floor Job printed no stamp")?;
        out.push(Duration::from_nanos((stamp - sent).max(0) as u64));
        jobs.delete(&name, &DeleteParams::foreground()).await?;
    }
    Ok(out)
}

/// A namespace of the bench's own.
struct BenchNamespace {
    api: Api<Namespace>,
    name: String,
}

impl BenchNamespace {
    async fn create(client: &kube::Client) -> anyhow::Result<BenchNamespace> {
        let api: Api<Namespace> = Api::all(client.clone());
        let name = format!("hoist-bench-{}", std::process::id());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        api.create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("cannot create namespace {name}"))?;
        // Pods are admitted once the namespace's default service account exists.
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        let t0 = Instant::now();
        while sas.get_opt("default").await?.is_none() {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("namespace {name} got no default service account within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(BenchNamespace { api, name })
    }

    /// Deletes the namespace (and whatever is left in it), without waiting.
    async fn remove(self) {
        if let Err(e) = self
            .api
            .delete(&self.name, &DeleteParams::background())
            .await
        {
            println!("  (cannot delete namespace {}: {e})", self.name);
        }
    }
}

/// Runs the Kubernetes figures with the bench's server (`c`, `server_url`, `key`).
pub(crate) async fn run(
    c: &Client,
    server_url: &str,
    key: &str,
    dir: &std::path::Path,
    image: &str,
    samples: usize,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes cluster answers (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let ns = BenchNamespace::create(&client).await?;
    let result = figures(c, server_url, key, dir, image, samples, &client, &ns.name).await;
    ns.remove().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn figures(
    c: &Client,
    server_url: &str,
    key: &str,
    dir: &std::path::Path,
    image: &str,
    samples: usize,
    client: &kube::Client,
    ns: &str,
) -> anyhow::Result<()> {
    let proxy = start_proxy(client.clone()).await?;
    let kubeconfig = dir.join("bench-kubeconfig");
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {"server": proxy.url}}],
        "users": [{"name": "bench", "user": {}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench", "namespace": ns}}],
        "current-context": "bench",
    });
    tokio::fs::write(&kubeconfig, serde_json::to_vec(&kc)?).await?;
    let config = dir.join("k8s-launch-config.yaml");
    // The runner wants a registry its cluster can pull from; these runs use a prebuilt
    // image the node has, so nothing is pushed there.
    tokio::fs::write(
        &config,
        "registry:\n  type: oci\n  uri: 127.0.0.1:5000/hoist-bench\nmax_jobs: 4\n",
    )
    .await?;
    create_queue(c, "k8s", "kubernetes", job_config(ns, image)).await?;
    let agent = super::dispatch::AgentProcess(
        std::process::Command::new(std::env::current_exe()?)
            .args(["agent", "--name", "bench-k8s", "-c"])
            .arg(&config)
            .args(["-q", "k8s"])
            .env("HOIST_HOST", server_url)
            .env("HOIST_API_KEY", key)
            .env("HOIST_LOG", "warn")
            .env("KUBECONFIG", &kubeconfig)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("HOME", dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start `hoist agent` for the kubernetes queue")?,
    );
    super::dispatch::wait_registered(c, "bench-k8s").await?;

    let quick = LaunchRequest {
        queue: "k8s".into(),
        image: Some(image.to_string()),
        entry_point: Some(vec!["sh".into(), "-c".into(), STAMP.into()]),
        ..Default::default()
    };
    dispatch(c, &quick, 3).await?; // warm up (image on the node, discovery cached)
    let before = proxy.counts.requests.load(Ordering::Relaxed);
    let watches_before = proxy.counts.watches.load(Ordering::Relaxed);
    let kinds_0 = proxy.counts.by_kind();
    // hoist's runs and the floor's Jobs alternate, so that what else the machine does
    // weighs on both alike. (The floor talks to the API server directly: its requests
    // are not counted.)
    let mut d = Samples::default();
    let mut f = Samples::default();
    for i in 0..samples {
        d.0.extend(dispatch(c, &quick, 1).await?.0);
        f.0.extend(floor(client, ns, image, i..i + 1).await?.0);
    }
    let kinds_1 = proxy.counts.by_kind();
    let quick_reqs =
        (proxy.counts.requests.load(Ordering::Relaxed) - before) as f64 / samples as f64;
    let quick_watches =
        (proxy.counts.watches.load(Ordering::Relaxed) - watches_before) as f64 / samples as f64;
    // Runs that last: the same job sleeping first. Polling would cost more per run.
    let slow_n = (samples / 10).clamp(3, 10);
    let slow = LaunchRequest {
        entry_point: Some(vec!["sh".into(), "-c".into(), format!("{STAMP}; sleep 5")]),
        ..quick.clone()
    };
    let before = proxy.counts.requests.load(Ordering::Relaxed);
    dispatch(c, &slow, slow_n).await?;
    let slow_reqs = (proxy.counts.requests.load(Ordering::Relaxed) - before) as f64 / slow_n as f64;
    let kinds_2 = proxy.counts.by_kind();
    drop(agent);

    let (p50, p99) = (d.pct(50.0), d.pct(99.0));
    let (f50, f99) = (f.pct(50.0), f.pct(99.0));
    let r50 = p50.as_secs_f64() / f50.as_secs_f64().max(1e-9);
    let r99 = p99.as_secs_f64() / f99.as_secs_f64().max(1e-9);
    line(
        "kubernetes dispatch p50 (launch → container start)",
        &ms(p50),
        p50.as_secs_f64() * 1e3,
        None,
    );
    line(
        "kubernetes dispatch p99",
        &ms(p99),
        p99.as_secs_f64() * 1e3,
        None,
    );
    line(
        "  floor: the same Job created with the API, p50",
        &ms(f50),
        f50.as_secs_f64() * 1e3,
        None,
    );
    line("  floor p99", &ms(f99), f99.as_secs_f64() * 1e3, None);
    line(
        "kubernetes dispatch / floor, p50",
        &format!("{r50:.2}×"),
        r50,
        Some(Target::AtMost(1.2, "1.2×")),
    );
    line(
        "kubernetes dispatch / floor, p99",
        &format!("{r99:.2}×"),
        r99,
        None,
    );
    line(
        &format!("API requests per run, {samples} quick runs"),
        &format!("{quick_reqs:.1}"),
        quick_reqs,
        None,
    );
    line(
        "  of which watches",
        &format!("{quick_watches:.1}"),
        quick_watches,
        None,
    );
    line(
        &format!("API requests per run, {slow_n} runs of 5 s"),
        &format!("{slow_reqs:.1}"),
        slow_reqs,
        None,
    );
    let growth = slow_reqs / quick_reqs.max(1e-9);
    line(
        "  5 s runs / quick runs (constant: no polling)",
        &format!("{growth:.2}×"),
        growth,
        Some(Target::AtMost(1.2, "1.2×")),
    );
    // Where the requests go, per run, for both kinds of run.
    let per_run = |a: &std::collections::BTreeMap<String, u64>,
                   b: &std::collections::BTreeMap<String, u64>,
                   k: &str,
                   n: usize| {
        (b.get(k).copied().unwrap_or(0) - a.get(k).copied().unwrap_or(0)) as f64 / n as f64
    };
    println!("  requests per run by kind (quick / 5 s):");
    for k in kinds_2.keys() {
        let (q, l) = (
            per_run(&kinds_0, &kinds_1, k, samples),
            per_run(&kinds_1, &kinds_2, k, slow_n),
        );
        if q > 0.0 || l > 0.0 {
            println!("    {k:<40} {q:>6.2} / {l:>6.2}");
        }
    }
    // Nothing of the runs may be left in the namespace.
    let left = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("hoist.dev/run-id"))
        .await?
        .items
        .len();
    if left > 0 {
        println!("  ({left} pods of hoist runs still in {ns}: cleanup is late)");
    }
    drop(proxy);
    Ok(())
}

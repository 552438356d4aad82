//! Serving HTTP/1.1 connections: the accept loop, per-connection timeouts, the
//! connection limit and graceful shutdown.
//!
//! Each accepted connection is served by hyper's HTTP/1 connection driver in its own
//! task, watched by a deadline that depends on what the connection is doing:
//!
//! - *a request in flight* (from its complete head until its response body has been
//!   sent, so long polls and log follow streams included): no deadline;
//! - *a request head begun* (bytes received, head not complete), or *a new connection
//!   that has sent no complete head yet*: closed [`ConnLimits::header_timeout`] after
//!   the first byte (after connecting, for a new connection);
//! - *idle* between requests on a keep-alive connection: closed after
//!   [`ConnLimits::idle_timeout`].
//!
//! A connection closed by a deadline has nothing in flight, so nothing is lost.
//!
//! At most [`ConnLimits::max_connections`] connections are open at once. When the limit
//! is reached the server stops accepting (as nginx, HAProxy and Go's `LimitListener`
//! do): new connections wait in the kernel's listen backlog until an open one closes,
//! which the timeouts above guarantee happens. One warning is logged per burst (the
//! burst ends when fewer than 90 % of the limit are open again), naming the limit and
//! the flag that raises it.
//!
//! Shutdown: the accept loop stops, every connection is asked to close once its
//! in-flight request has finished (idle ones close at once), and the task ends when
//! the last connection has closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Default [`ConnLimits::header_timeout`]: 30 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ConnLimits::idle_timeout`]: 120 s (longer than clients' pool idle time,
/// 90 s for hoist's own, so a client normally closes an idle connection first and
/// never sends a request on one the server is closing).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default [`ConnLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Longest time to receive a complete request head, from a new connection's start
    /// or from the first byte of a later request.
    pub header_timeout: Duration,
    /// Longest time a keep-alive connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then waits for the open
/// connections to finish their in-flight requests and close.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    let mut in_burst = false;
    loop {
        // A place for the next connection first: at the limit, leave new connections
        // in the listen backlog.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => {
                if in_burst && permits.available_permits() > max / 10 {
                    in_burst = false;
                }
                p
            }
            Err(_) => {
                if !in_burst {
                    in_burst = true;
                    metrics::counter!("hoist_http_connection_limit_reached_total").increment(1);
                    tracing::warn!(
                        message = "Connection limit reached: new connections wait until an open one closes. Raise the limit with --max-connections (the process's open-file limit must allow it).",
                        limit = max,
                    );
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                    _ = shutdown.wait_for(|v| *v) => break,
                }
            }
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|v| *v) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                drop(permit);
                // Out of file descriptors (or another passing failure): back off
                // instead of spinning; open connections free some as they close.
                tracing::warn!(message = "Accepting a connection failed; retrying shortly.", error = %e);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.wait_for(|v| *v) => break,
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        metrics::gauge!("hoist_http_connections_open").increment(1.0);
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            serve_connection(stream, app, limits, shutdown).await;
            metrics::gauge!("hoist_http_connections_open").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit until it has closed.
    let _ = permits.acquire_many(max as u32).await;
}

/// What a connection is doing, shared by its IO, its service and its watchdog (all
/// driven by the connection's one task).
struct Activity {
    /// Requests whose head has arrived and whose response is not yet fully sent.
    in_flight: AtomicUsize,
    /// A request has been received on this connection.
    served: AtomicBool,
    /// Bytes arrived while nothing was in flight: a request head has begun.
    head_started: AtomicBool,
    /// When the current phase started, in ms since `epoch`.
    since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            head_started: AtomicBool::new(false),
            since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn mark(&self) {
        self.since_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn bytes_received(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && !self.head_started.swap(true, Ordering::Relaxed)
            && self.served.load(Ordering::Relaxed)
        {
            // A later request begins: its head has the header timeout from now. (A new
            // connection's head counts from the connection's start.)
            self.mark();
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        self.head_started.store(false, Ordering::Relaxed);
    }

    fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.mark();
        }
    }

    /// When the connection must be closed, if nothing changes before then.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        let waiting_for_head =
            self.head_started.load(Ordering::Relaxed) || !self.served.load(Ordering::Relaxed);
        Some(
            since
                + if waiting_for_head {
                    limits.header_timeout
                } else {
                    limits.idle_timeout
                },
        )
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let svc = hyper::service::service_fn({
        let activity = activity.clone();
        move |req: hyper::Request<hyper::body::Incoming>| {
            activity.request_started();
            let guard = InFlight(activity.clone());
            let app = app.clone();
            async move {
                let resp: Response = app
                    .oneshot(Request::from(req.map(Body::new)))
                    .await
                    .unwrap_or_else(|e| match e {});
                Ok::<_, std::convert::Infallible>(resp.map(|b| {
                    Body::new(GuardedBody {
                        inner: b,
                        _guard: guard,
                    })
                }))
            }
        }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        // The watchdog below applies the header timeout (hyper's own would also end
        // idle keep-alive connections).
        .header_read_timeout(None)
        .serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let mut watchdog = Watchdog {
        activity,
        limits,
        sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        armed: None,
    };
    let mut draining = false;
    loop {
        tokio::select! {
            // The connection first: the watchdog then sees the state it left.
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(message = "HTTP connection ended with an error.", error = %e);
                }
                return;
            }
            () = &mut watchdog => {
                metrics::counter!("hoist_http_connections_timed_out_total").increment(1);
                // Nothing in flight: closing loses nothing.
                return;
            }
            _ = shutdown.wait_for(|v| *v), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves when the connection's current deadline passes.
struct Watchdog {
    activity: Arc<Activity>,
    limits: ConnLimits,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Future for Watchdog {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let deadline = this.activity.deadline(&this.limits);
        if deadline != this.armed {
            this.armed = deadline;
            if let Some(d) = deadline {
                this.sleep.as_mut().reset(d);
            }
        }
        match this.armed {
            Some(_) => this.sleep.as_mut().poll(cx),
            // Nothing to wait for until the connection changes state; it is polled
            // first whenever it does.
            None => Poll::Pending,
        }
    }
}

/// Counts a request as in flight until its response body is dropped (sent, or the
/// connection gone).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_received();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

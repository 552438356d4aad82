//! hoist-client: the typed HTTP client of the `/api/v1` API.
//!
//! Used by the CLI and by the agent; every call maps to one endpoint and returns the
//! wire types of `hoist_core::api`. Errors keep the server's code and message
//! ([`ClientError::Api`]) so callers can show them as they are.
//!
//! Architecture Invariant: the API key only ever travels in the `Authorization`
//! header; it is never part of a URL, an error or a `Debug` output.

use std::time::Duration;

use futures::{Stream, StreamExt};
use hoist_core::api::*;
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        details: Option<serde_json::Value>,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the hoist server at {base}: {source}")]
    Transport {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something that is not the expected JSON.
    #[error("unexpected answer from the hoist server ({status}): {detail}")]
    Protocol { status: u16, detail: String },
    #[error("invalid server URL {0:?}: expected http://HOST:PORT or https://HOST")]
    BadUrl(String),
    /// A local file could not be read or written.
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The answer to `HEAD /api/v1/blobs/{digest}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHead {
    /// The entity has the blob (no upload needed).
    pub exists: bool,
    /// The largest upload the server accepts, when it says.
    pub max_bytes: Option<u64>,
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// Worth retrying: the server was unreachable, overloaded or restarting.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } | ClientError::Protocol { status, .. } => {
                matches!(*status, 502..=504) || *status == 503
            }
            ClientError::BadUrl(_) | ClientError::Io { .. } => false,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// An API key or run token; never printed (the one `Secret` of hoist-core).
pub use hoist_core::secret::Secret;

#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<Secret>,
}

/// Path segment escaping for names that end up in URLs.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<hoist_core::run::RunState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:7480`).
    pub fn new(base: &str, key: Option<Secret>) -> Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|_| ClientError::BadUrl(base.clone()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(ClientError::BadUrl(base));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport {
                base: base.clone(),
                source: e,
            })?;
        Ok(Client { http, base, key })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The same server with another credential (a run token, say).
    pub fn with_key(&self, key: Secret) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            key: Some(key),
        }
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k.expose());
        }
        r
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        ClientError::Transport {
            base: self.base.clone(),
            source: e.without_url(),
        }
    }

    async fn send(&self, r: RequestBuilder) -> Result<reqwest::Response> {
        let resp = r.send().await.map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => Err(ClientError::Api {
                status,
                code: b.error.code,
                message: b.error.message,
                details: b.error.details,
            }),
            Err(_) => Err(ClientError::Protocol {
                status,
                detail: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            }),
        }
    }

    async fn json<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T> {
        let resp = self.send(r).await?;
        self.body(resp).await
    }

    async fn body<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            status,
            detail: format!("{e}"),
        })
    }

    async fn empty(&self, r: RequestBuilder) -> Result<()> {
        self.send(r).await.map(|_| ())
    }

    // -- health --------------------------------------------------------------------

    pub async fn health(&self) -> Result<Health> {
        self.json(
            self.req(Method::GET, "/healthz")
                .timeout(Duration::from_secs(5)),
        )
        .await
    }

    // -- identity ------------------------------------------------------------------

    pub async fn me(&self) -> Result<Me> {
        self.json(self.req(Method::GET, "/api/v1/me")).await
    }
    pub async fn create_user(&self, req: &CreateUser) -> Result<CreatedUser> {
        self.json(self.req(Method::POST, "/api/v1/users").json(req))
            .await
    }
    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.json(self.req(Method::GET, "/api/v1/users")).await
    }
    pub async fn get_user(&self, name: &str) -> Result<User> {
        self.json(self.req(Method::GET, &format!("/api/v1/users/{}", seg(name))))
            .await
    }
    /// Deletes a user (admins): keys revoked, agents' sessions ended, name reserved.
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        self.empty(self.req(Method::DELETE, &format!("/api/v1/users/{}", seg(name))))
            .await
    }
    pub async fn create_team(&self, req: &CreateTeam) -> Result<Team> {
        self.json(self.req(Method::POST, "/api/v1/teams").json(req))
            .await
    }
    pub async fn list_teams(&self) -> Result<Vec<Team>> {
        self.json(self.req(Method::GET, "/api/v1/teams")).await
    }
    pub async fn get_team(&self, name: &str) -> Result<Team> {
        self.json(self.req(Method::GET, &format!("/api/v1/teams/{}", seg(name))))
            .await
    }
    pub async fn delete_team(&self, name: &str) -> Result<()> {
        self.empty(self.req(Method::DELETE, &format!("/api/v1/teams/{}", seg(name))))
            .await
    }
    pub async fn add_member(&self, team: &str, user: &str) -> Result<Team> {
        self.json(
            self.req(
                Method::POST,
                &format!("/api/v1/teams/{}/members", seg(team)),
            )
            .json(&AddMember { user: user.into() }),
        )
        .await
    }
    pub async fn remove_member(&self, team: &str, user: &str) -> Result<()> {
        self.empty(self.req(
            Method::DELETE,
            &format!("/api/v1/teams/{}/members/{}", seg(team), seg(user)),
        ))
        .await
    }
    pub async fn create_key(&self, req: &CreateApiKey) -> Result<CreatedApiKey> {
        self.json(self.req(Method::POST, "/api/v1/keys").json(req))
            .await
    }
    pub async fn list_keys(&self, all: bool) -> Result<Vec<ApiKey>> {
        self.json(self.req(Method::GET, "/api/v1/keys").query(&[("all", all)]))
            .await
    }
    pub async fn revoke_key(&self, id: &str) -> Result<()> {
        self.empty(self.req(Method::DELETE, &format!("/api/v1/keys/{}", seg(id))))
            .await
    }

    // -- queues --------------------------------------------------------------------

    pub async fn create_queue(&self, req: &CreateQueue) -> Result<Queue> {
        self.create_queue_with(req, false).await
    }
    /// [`Client::create_queue`]; `allow_privileged` asks (as an admin) to accept a
    /// config with privileged settings.
    pub async fn create_queue_with(
        &self,
        req: &CreateQueue,
        allow_privileged: bool,
    ) -> Result<Queue> {
        let mut r = self.req(Method::POST, "/api/v1/queues").json(req);
        if allow_privileged {
            r = r.query(&[("allow_privileged", true)]);
        }
        self.json(r).await
    }
    pub async fn list_queues(&self, entity: Option<&str>) -> Result<Vec<Queue>> {
        let mut r = self.req(Method::GET, "/api/v1/queues");
        if let Some(e) = entity {
            r = r.query(&[("entity", e)]);
        }
        self.json(r).await
    }
    pub async fn get_queue(&self, entity: &str, name: &str) -> Result<Queue> {
        self.json(self.req(
            Method::GET,
            &format!("/api/v1/queues/{}/{}", seg(entity), seg(name)),
        ))
        .await
    }
    pub async fn update_queue(&self, entity: &str, name: &str, req: &UpdateQueue) -> Result<Queue> {
        self.update_queue_with(entity, name, req, false).await
    }
    /// [`Client::update_queue`]; `allow_privileged` asks (as an admin) to accept a
    /// config with new privileged settings.
    pub async fn update_queue_with(
        &self,
        entity: &str,
        name: &str,
        req: &UpdateQueue,
        allow_privileged: bool,
    ) -> Result<Queue> {
        let mut r = self
            .req(
                Method::PATCH,
                &format!("/api/v1/queues/{}/{}", seg(entity), seg(name)),
            )
            .json(req);
        if allow_privileged {
            r = r.query(&[("allow_privileged", true)]);
        }
        self.json(r).await
    }
    pub async fn delete_queue(&self, entity: &str, name: &str, force: bool) -> Result<()> {
        self.empty(
            self.req(
                Method::DELETE,
                &format!("/api/v1/queues/{}/{}", seg(entity), seg(name)),
            )
            .query(&[("force", force)]),
        )
        .await
    }

    // -- runs ----------------------------------------------------------------------

    pub async fn launch(&self, req: &LaunchRequest) -> Result<Run> {
        self.json(self.req(Method::POST, "/api/v1/runs").json(req))
            .await
    }
    pub async fn list_runs(&self, q: &RunQuery) -> Result<RunList> {
        self.json(self.req(Method::GET, "/api/v1/runs").query(q))
            .await
    }
    pub async fn get_run(&self, id: &str) -> Result<Run> {
        self.json(self.req(Method::GET, &format!("/api/v1/runs/{}", seg(id))))
            .await
    }
    pub async fn cancel_run(&self, id: &str) -> Result<Run> {
        self.json(self.req(Method::POST, &format!("/api/v1/runs/{}/cancel", seg(id))))
            .await
    }
    pub async fn stop_run(&self, id: &str, reason: Option<String>) -> Result<Run> {
        self.json(
            self.req(Method::POST, &format!("/api/v1/runs/{}/stop", seg(id)))
                .json(&StopRequest { reason }),
        )
        .await
    }
    pub async fn update_run(&self, id: &str, u: &RunUpdate) -> Result<Run> {
        self.json(
            self.req(Method::POST, &format!("/api/v1/runs/{}/state", seg(id)))
                .json(u),
        )
        .await
    }
    pub async fn read_logs(&self, id: &str, offset: u64, limit: Option<u64>) -> Result<LogPage> {
        let mut r = self
            .req(Method::GET, &format!("/api/v1/runs/{}/logs", seg(id)))
            .query(&[("offset", offset)]);
        if let Some(l) = limit {
            r = r.query(&[("limit", l)]);
        }
        self.json(r).await
    }
    /// The last `tail` lines of a run's log (at most 10000, within 1 MiB), or with
    /// `before` the last ones before that line; the first line's offset is where the
    /// page before this one ends.
    pub async fn read_logs_tail(
        &self,
        id: &str,
        tail: u64,
        before: Option<u64>,
    ) -> Result<LogPage> {
        let mut r = self
            .req(Method::GET, &format!("/api/v1/runs/{}/logs", seg(id)))
            .query(&[("tail", tail)]);
        if let Some(b) = before {
            r = r.query(&[("before", b)]);
        }
        self.json(r).await
    }
    pub async fn append_logs(&self, id: &str, batch: &LogBatch) -> Result<LogPage> {
        self.json(
            self.req(Method::POST, &format!("/api/v1/runs/{}/logs", seg(id)))
                .json(batch),
        )
        .await
    }

    /// Follows a run's log live from `offset`; the stream ends when the run has ended
    /// and every line was delivered.
    pub async fn follow_logs(
        &self,
        id: &str,
        offset: u64,
    ) -> Result<impl Stream<Item = Result<StoredLogLine>> + use<>> {
        let resp = self
            .send(
                self.req(Method::GET, &format!("/api/v1/runs/{}/logs", seg(id)))
                    .query(&[("offset", offset.to_string()), ("follow", "true".into())]),
            )
            .await?;
        let base = self.base.clone();
        let mut bytes = resp.bytes_stream();
        Ok(async_stream::try_stream! {
            let mut buf: Vec<u8> = Vec::new();
            while let Some(chunk) = bytes.next().await {
                let chunk = chunk.map_err(|e| ClientError::Transport { base: base.clone(), source: e.without_url() })?;
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = &line[..line.len() - 1];
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let parsed: StoredLogLine = serde_json::from_slice(line).map_err(|e| ClientError::Protocol {
                        status: 200,
                        detail: format!("bad log line: {e}"),
                    })?;
                    yield parsed;
                }
            }
        })
    }

    // -- jobs ----------------------------------------------------------------------

    /// Creates a job or a new version of it. The flag is true when a version was
    /// added, false when the latest version had this source already.
    pub async fn create_job(&self, req: &CreateJob) -> Result<(Job, bool)> {
        let resp = self
            .send(self.req(Method::POST, "/api/v1/jobs").json(req))
            .await?;
        let created = resp.status().as_u16() == 201;
        let job = self.body(resp).await?;
        Ok((job, created))
    }
    pub async fn list_jobs(&self, entity: Option<&str>) -> Result<Vec<Job>> {
        let mut r = self.req(Method::GET, "/api/v1/jobs");
        if let Some(e) = entity {
            r = r.query(&[("entity", e)]);
        }
        self.json(r).await
    }
    /// A job with all its versions, newest first.
    pub async fn get_job(&self, entity: &str, name: &str) -> Result<Job> {
        self.json(self.req(
            Method::GET,
            &format!("/api/v1/jobs/{}/{}", seg(entity), seg(name)),
        ))
        .await
    }
    /// One version (`v3` or `latest`).
    pub async fn get_job_version(
        &self,
        entity: &str,
        name: &str,
        version: &str,
    ) -> Result<JobVersion> {
        self.json(self.req(
            Method::GET,
            &format!(
                "/api/v1/jobs/{}/{}/versions/{}",
                seg(entity),
                seg(name),
                seg(version)
            ),
        ))
        .await
    }
    pub async fn delete_job(&self, entity: &str, name: &str) -> Result<()> {
        self.empty(self.req(
            Method::DELETE,
            &format!("/api/v1/jobs/{}/{}", seg(entity), seg(name)),
        ))
        .await
    }

    // -- blobs ---------------------------------------------------------------------

    /// Whether `entity` (default: the caller's own) has the blob, and the largest
    /// upload the server accepts.
    pub async fn head_blob(&self, digest: &str, entity: Option<&str>) -> Result<BlobHead> {
        let mut r = self.req(Method::HEAD, &format!("/api/v1/blobs/{}", seg(digest)));
        if let Some(e) = entity {
            r = r.query(&[("entity", e)]);
        }
        let resp = r.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let max_bytes = resp
            .headers()
            .get("x-hoist-max-artifact-bytes")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match status {
            200 => Ok(BlobHead {
                exists: true,
                max_bytes,
            }),
            404 => Ok(BlobHead {
                exists: false,
                max_bytes,
            }),
            // HEAD answers carry no body: name the usual causes.
            401 => Err(ClientError::Api {
                status,
                code: ErrorCode::Unauthenticated,
                message: "the API key is not valid (unknown, revoked or mistyped)".into(),
                details: None,
            }),
            400 => Err(ClientError::Api {
                status,
                code: ErrorCode::BadRequest,
                message: format!("invalid digest {digest:?}"),
                details: None,
            }),
            _ => Err(ClientError::Protocol {
                status,
                detail: "unexpected answer to HEAD /api/v1/blobs".into(),
            }),
        }
    }

    /// Uploads an artifact held in memory (small ones; see [`Client::upload_blob_file`]).
    pub async fn upload_blob(&self, bytes: Vec<u8>, entity: Option<&str>) -> Result<Blob> {
        let mut r = self
            .req(Method::POST, "/api/v1/blobs")
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .body(bytes);
        if let Some(e) = entity {
            r = r.query(&[("entity", e)]);
        }
        self.json(r).await
    }

    /// Uploads the artifact in `path` for `entity` (default: the caller's own),
    /// streaming it; `progress` gets the number of bytes sent so far.
    pub async fn upload_blob_file(
        &self,
        path: &std::path::Path,
        entity: Option<&str>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Blob> {
        use tokio::io::AsyncReadExt;
        let io = |e: std::io::Error| ClientError::Io {
            what: format!("read {}", path.display()),
            source: e,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let stream = async_stream::stream! {
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0u8; 256 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        sent += n as u64;
                        progress(sent);
                        yield Ok::<bytes::Bytes, std::io::Error>(bytes::Bytes::from(buf));
                    }
                    Err(e) => {
                        yield Err(e);
                        break;
                    }
                }
            }
        };
        let mut r = self
            .req(Method::POST, "/api/v1/blobs")
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(e) = entity {
            r = r.query(&[("entity", e)]);
        }
        self.json(r).await
    }

    /// Downloads a blob as a stream of chunks (not verified; see
    /// [`Client::download_blob_to`]).
    pub async fn download_blob(
        &self,
        digest: &str,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes>> + use<>> {
        let resp = self
            .send(self.req(Method::GET, &format!("/api/v1/blobs/{}", seg(digest))))
            .await?;
        let base = self.base.clone();
        Ok(resp.bytes_stream().map(move |c| {
            c.map_err(|e| ClientError::Transport {
                base: base.clone(),
                source: e.without_url(),
            })
        }))
    }

    /// Downloads a blob into `dest` (created or truncated) and checks its digest; a
    /// mismatch removes the file and is an error. Returns the size.
    pub async fn download_blob_to(&self, digest: &str, dest: &std::path::Path) -> Result<u64> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let io = |e: std::io::Error| ClientError::Io {
            what: format!("write {}", dest.display()),
            source: e,
        };
        let stream = self.download_blob(digest).await?;
        let mut stream = std::pin::pin!(stream);
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        let got: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if digest.strip_prefix("sha256:") != Some(got.as_str()) {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(ClientError::Protocol {
                status: 200,
                detail: format!("the blob downloaded for {digest} has digest sha256:{got}"),
            });
        }
        Ok(size)
    }

    // -- stats ---------------------------------------------------------------------

    /// `GET /api/v1/stats/overview`: runs per hour, queue waits and run durations over
    /// the last `hours` hours (the server's default, 24, when `None`).
    pub async fn stats_overview(&self, hours: Option<u32>) -> Result<OverviewStats> {
        let mut r = self.req(Method::GET, "/api/v1/stats/overview");
        if let Some(h) = hours {
            r = r.query(&[("hours", h)]);
        }
        self.json(r).await
    }
    /// `GET /api/v1/stats/queues`: where each queue stands now (of `entity` only, when
    /// given).
    pub async fn queue_stats(&self, entity: Option<&str>) -> Result<QueueStatsList> {
        let mut r = self.req(Method::GET, "/api/v1/stats/queues");
        if let Some(e) = entity {
            r = r.query(&[("entity", e)]);
        }
        self.json(r).await
    }

    // -- agents --------------------------------------------------------------------

    pub async fn register_agent(&self, req: &RegisterAgent) -> Result<AgentSession> {
        self.json(self.req(Method::POST, "/api/v1/agents").json(req))
            .await
    }
    pub async fn list_agents(&self) -> Result<Vec<Agent>> {
        self.json(self.req(Method::GET, "/api/v1/agents")).await
    }
    pub async fn get_agent(&self, id: &str) -> Result<Agent> {
        self.json(self.req(Method::GET, &format!("/api/v1/agents/{}", seg(id))))
            .await
    }
    /// A long poll: the HTTP timeout is the wait plus a margin.
    pub async fn claim(&self, agent_id: &str, req: &ClaimRequest) -> Result<ClaimResponse> {
        self.json(
            self.req(
                Method::POST,
                &format!("/api/v1/agents/{}/claim", seg(agent_id)),
            )
            .timeout(Duration::from_millis(req.wait_ms) + Duration::from_secs(15))
            .json(req),
        )
        .await
    }
    pub async fn heartbeat(&self, agent_id: &str, req: &Heartbeat) -> Result<HeartbeatResponse> {
        self.json(
            self.req(
                Method::POST,
                &format!("/api/v1/agents/{}/heartbeat", seg(agent_id)),
            )
            .timeout(Duration::from_secs(15))
            .json(req),
        )
        .await
    }
    pub async fn deregister(&self, agent_id: &str, session: &str) -> Result<()> {
        self.empty(
            self.req(
                Method::POST,
                &format!("/api/v1/agents/{}/deregister", seg(agent_id)),
            )
            .timeout(Duration::from_secs(10))
            .json(&Deregister {
                session: session.into(),
            }),
        )
        .await
    }
}

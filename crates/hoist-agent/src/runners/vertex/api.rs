//! The REST calls of the Vertex AI runner, with reqwest and a bearer token from the
//! `gcp` environment (no Google SDK): the CustomJob service (v1) and Cloud Logging's
//! `entries:list` (v2). Every request the runner sends:
//!
//! | call | request | IAM permission |
//! |---|---|---|
//! | `customJobs.create` | `POST {vertex}/v1/projects/P/locations/R/customJobs` | `aiplatform.customJobs.create` |
//! | `customJobs.get` | `GET {vertex}/v1/projects/P/locations/R/customJobs/ID` | `aiplatform.customJobs.get` |
//! | `customJobs.cancel` | `POST {vertex}/v1/…/customJobs/ID:cancel` | `aiplatform.customJobs.cancel` |
//! | `customJobs.list` | `GET {vertex}/v1/…/customJobs?filter=labels.hoist-run-id="…"` | `aiplatform.customJobs.list` |
//! | `entries.list` | `POST {logging}/v2/entries:list` | `logging.logEntries.list` |
//!
//! `{vertex}` is `https://REGION-aiplatform.googleapis.com` unless `HOIST_VERTEX_ENDPOINT`
//! replaces it, `{logging}` `https://logging.googleapis.com` unless
//! `HOIST_LOGGING_ENDPOINT` does (read from the agent's environment when the runner is
//! built; `https://`, or `http://` to a loopback address only).
//!
//! Errors come in Google's shape, `{"error": {"code", "message", "status"}}`, and are
//! shown with their status and message. 408, 429 and 5xx are transient: each call is
//! tried again a few times with backoff ([`crate::environments::http::retry_transient`]),
//! except `create`, which only retries 429 (nothing was created); another failure of a
//! create may have created the job, and the start's next attempt finds it by its labels.

use std::time::Duration;

use serde_json::{Value, json};

use crate::environments::Ambient;
use crate::environments::EnvError;
use crate::environments::gcp::GcpEnvironment;
use crate::environments::http::{self, cause, endpoint_url, retry_transient};
use crate::runners::RunnerError;

/// The variable that replaces `https://REGION-aiplatform.googleapis.com`.
pub const VERTEX_ENDPOINT_VAR: &str = "HOIST_VERTEX_ENDPOINT";
/// The variable that replaces `https://logging.googleapis.com`.
pub const LOGGING_ENDPOINT_VAR: &str = "HOIST_LOGGING_ENDPOINT";

/// Entries asked for per `entries:list` page (Cloud Logging allows 1000).
pub const LOG_PAGE_SIZE: u32 = 1000;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    /// The service answered an error (Google's error shape, or what came instead).
    #[error("HTTP {code}{}: {message}", if status.is_empty() { String::new() } else { format!(" {status}") })]
    Status {
        code: u16,
        status: String,
        message: String,
    },
    /// No answer (connect, TLS, timeout, a broken connection).
    #[error("no answer: {}", cause(.0))]
    Request(#[source] reqwest::Error),
    /// No token.
    #[error("no access token: {0}")]
    Token(#[source] EnvError),
    /// A 2xx whose body is not what the API documents.
    #[error("an unreadable answer: {0}")]
    Unreadable(#[source] serde_json::Error),
}

impl GoogleError {
    pub fn is_transient(&self) -> bool {
        match self {
            GoogleError::Status { code, .. } => http::transient_status(*code),
            GoogleError::Request(e) => http::transient_request(e),
            GoogleError::Token(e) => e.is_transient(),
            GoogleError::Unreadable(_) => false,
        }
    }

    /// The HTTP status, for an answer.
    pub fn code(&self) -> Option<u16> {
        match self {
            GoogleError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Google's status name (`FAILED_PRECONDITION`), for an answer.
    pub fn status(&self) -> Option<&str> {
        match self {
            GoogleError::Status { status, .. } => Some(status),
            _ => None,
        }
    }

    /// As a [`RunnerError::Api`], `what` saying what was being done.
    pub fn into_runner(self, what: &str) -> RunnerError {
        let hint = match self.code() {
            Some(401) => "; the agent's gcp credentials were refused",
            Some(403) => {
                "; the agent's gcp credentials lack a permission (roles/aiplatform.user and roles/logging.viewer cover hoist's calls)"
            }
            _ => "",
        };
        RunnerError::Api {
            message: format!("Vertex AI: {what}: {self}{hint}"),
            transient: self.is_transient(),
            source: Box::new(self),
        }
    }
}

/// Reads Google's error body.
fn google_error(code: u16, body: &str) -> GoogleError {
    let parsed = http::google_error_body(body);
    let message = match parsed.as_ref().filter(|b| !b.message.is_empty()) {
        Some(b) => b.message.clone(),
        None => {
            let s: String = body.chars().take(200).collect();
            if s.trim().is_empty() {
                "(no message)".into()
            } else {
                s.trim().to_string()
            }
        }
    };
    let status = parsed.map(|b| b.status).unwrap_or_default();
    GoogleError::Status {
        code,
        status,
        message,
    }
}

/// The Vertex AI and Cloud Logging endpoints of one project and region.
#[derive(Clone)]
pub struct VertexApi {
    http: reqwest::Client,
    env: GcpEnvironment,
    vertex: String,
    logging: String,
    pub project: String,
    pub region: String,
}

impl std::fmt::Debug for VertexApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VertexApi")
            .field("vertex", &self.vertex)
            .field("logging", &self.logging)
            .field("project", &self.project)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl VertexApi {
    /// The API of `project` in `env`'s region, endpoints from `ambient`.
    pub fn new(
        env: GcpEnvironment,
        project: String,
        ambient: &Ambient,
    ) -> Result<VertexApi, RunnerError> {
        let region = env.region().to_string();
        let base = |var: &str, default: String| -> Result<String, RunnerError> {
            let s = ambient.var(var).map(str::to_string).unwrap_or(default);
            let u = endpoint_url(&s, var).map_err(|e| RunnerError::Setup(e.to_string()))?;
            Ok(u.as_str().trim_end_matches('/').to_string())
        };
        Ok(VertexApi {
            http: http::client(Duration::from_secs(10), Duration::from_secs(60)),
            vertex: base(
                VERTEX_ENDPOINT_VAR,
                format!("https://{region}-aiplatform.googleapis.com"),
            )?,
            logging: base(
                LOGGING_ENDPOINT_VAR,
                "https://logging.googleapis.com".into(),
            )?,
            env,
            project,
            region,
        })
    }

    /// `projects/P/locations/R`.
    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.region)
    }

    /// The URL of a resource name (`projects/…/customJobs/ID`) or of a collection.
    fn url(&self, name: &str) -> String {
        format!("{}/v1/{name}", self.vertex)
    }

    async fn send(
        &self,
        req: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Value, GoogleError> {
        let token = self.env.access_token().await.map_err(GoogleError::Token)?;
        let resp = req(&self.http)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(GoogleError::Request)?;
        let code = resp.status().as_u16();
        let body = resp.text().await.map_err(GoogleError::Request)?;
        if !(200..300).contains(&code) {
            return Err(google_error(code, &body));
        }
        if body.trim().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_str(&body).map_err(GoogleError::Unreadable)
    }

    /// `customJobs.create`: the created job. 429 is tried again (nothing was
    /// created); nothing else is.
    pub async fn create(&self, body: &Value) -> Result<Value, GoogleError> {
        let url = self.url(&format!("{}/customJobs", self.parent()));
        retry_transient(
            "customJobs.create",
            |e: &GoogleError| e.code() == Some(429),
            || self.send(|c| c.post(&url).json(body)),
        )
        .await
    }

    /// `customJobs.get` of a job's resource name.
    pub async fn get(&self, name: &str) -> Result<Value, GoogleError> {
        let url = self.url(name);
        retry_transient("customJobs.get", GoogleError::is_transient, || {
            self.send(|c| c.get(&url))
        })
        .await
    }

    /// `customJobs.cancel`.
    pub async fn cancel(&self, name: &str) -> Result<(), GoogleError> {
        let url = self.url(&format!("{name}:cancel"));
        retry_transient("customJobs.cancel", GoogleError::is_transient, || {
            self.send(|c| c.post(&url).json(&json!({})))
        })
        .await
        .map(|_| ())
    }

    /// `customJobs.list` with `filter`, every page.
    pub async fn list(&self, filter: &str) -> Result<Vec<Value>, GoogleError> {
        let url = self.url(&format!("{}/customJobs", self.parent()));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..100 {
            let page = retry_transient("customJobs.list", GoogleError::is_transient, || {
                let mut q = vec![("filter", filter.to_string())];
                if let Some(t) = &token {
                    q.push(("pageToken", t.clone()));
                }
                let url = &url;
                self.send(move |c| c.get(url).query(&q))
            })
            .await?;
            if let Some(items) = page.get("customJobs").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            token = page
                .get("nextPageToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// One page of Cloud Logging `entries:list` for the project: the entries and the
    /// next page's token.
    pub async fn entries(
        &self,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), GoogleError> {
        let url = format!("{}/v2/entries:list", self.logging);
        let mut body = json!({
            "resourceNames": [format!("projects/{}", self.project)],
            "filter": filter,
            "orderBy": "timestamp asc",
            "pageSize": LOG_PAGE_SIZE,
        });
        if let Some(t) = page_token {
            body["pageToken"] = json!(t);
        }
        let page = retry_transient("entries.list", GoogleError::is_transient, || {
            self.send(|c| c.post(&url).json(&body))
        })
        .await?;
        let entries = page
            .get("entries")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let next = page
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok((entries, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_errors() {
        let e = google_error(
            400,
            r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"x\"","status":"INVALID_ARGUMENT"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "HTTP 400 INVALID_ARGUMENT: Invalid JSON payload received. Unknown name \"x\""
        );
        assert!(!e.is_transient());
        let e = google_error(429, "quota");
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "HTTP 429: quota");
    }
}

//! SageMaker's and CloudWatch Logs' JSON 1.1 APIs, called with reqwest and signed with
//! SigV4 (`aws-sigv4`): `POST /` with `Content-Type: application/x-amz-json-1.1` and
//! `X-Amz-Target: SageMaker.<Operation>` (signing name `sagemaker`) or
//! `Logs_20140328.<Operation>` (signing name `logs`). No SDK client: aws-sdk-sagemaker
//! alone would add minutes to every cold build for the six calls the runner makes.
//!
//! Errors are read as the AWS JSON protocol writes them: the code from `__type` (after
//! any `namespace#` prefix) or the `x-amzn-ErrorType` header (before any `:`), the text
//! from `message` or `Message`. Throttling (`ThrottlingException`, …), 429 and 5xx
//! answers and requests that got no answer are retried here with backoff (a few times,
//! as the SDKs do), then returned as transient; everything else is returned at once.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::Value;

use crate::environments::EnvError;
use crate::environments::aws::AwsEnvironment;
use crate::environments::http::retry_transient;
use crate::runners::RunnerError;

/// One of the two services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    SageMaker,
    Logs,
}

impl Service {
    fn signing_name(self) -> &'static str {
        match self {
            Service::SageMaker => "sagemaker",
            Service::Logs => "logs",
        }
    }

    fn target_prefix(self) -> &'static str {
        match self {
            Service::SageMaker => "SageMaker",
            Service::Logs => "Logs_20140328",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::SageMaker => "SageMaker",
            Service::Logs => "CloudWatch Logs",
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The service answered an error.
    #[error("{service} {operation}: {code}: {message}")]
    Service {
        service: &'static str,
        operation: String,
        status: u16,
        code: String,
        message: String,
    },
    /// No answer (connection, TLS, timeout).
    #[error("{service} {operation}: no answer from {endpoint}: {cause}")]
    Unreachable {
        service: &'static str,
        operation: String,
        endpoint: String,
        cause: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not JSON.
    #[error("{service} {operation}: an unreadable answer (HTTP {status}): {detail}")]
    Unreadable {
        service: &'static str,
        operation: String,
        status: u16,
        detail: String,
    },
    /// No credentials to sign with, or the request could not be signed.
    #[error("{operation}: {source}")]
    Credentials {
        operation: String,
        #[source]
        source: EnvError,
    },
    #[error("{operation}: the request could not be signed: {detail}")]
    Signing { operation: String, detail: String },
}

impl ApiError {
    /// The service's error code (`ValidationException`, `ResourceNotFound`…).
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The service's message.
    pub fn message(&self) -> Option<&str> {
        match self {
            ApiError::Service { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Throttled, overloaded, or no answer: asking again later may work.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Service { status, code, .. } => {
                *status == 429 || *status >= 500 || is_throttling(code)
            }
            ApiError::Unreachable { .. } => true,
            ApiError::Unreadable { status, .. } => *status >= 500,
            ApiError::Credentials { source, .. } => source.is_transient(),
            ApiError::Signing { .. } => false,
        }
    }

    /// Throttled (a transient failure).
    pub fn is_throttling(&self) -> bool {
        matches!(self, ApiError::Service { status: 429, .. })
            || self.code().is_some_and(is_throttling)
    }

    /// The thing asked about does not exist: `ResourceNotFound` (SageMaker's model),
    /// `ResourceNotFoundException` (CloudWatch Logs), or the `ValidationException`
    /// "Requested resource not found" / "Could not find training job" SageMaker (and
    /// moto) answer `DescribeTrainingJob` of an unknown job with.
    pub fn is_not_found(&self) -> bool {
        match self {
            ApiError::Service { code, message, .. } => {
                code.starts_with("ResourceNotFound")
                    || (code == "ValidationException" && {
                        let m = message.to_ascii_lowercase();
                        m.contains("not found") || m.contains("could not find")
                    })
            }
            _ => false,
        }
    }

    /// As a [`RunnerError`]: [`RunnerError::Api`] keeping this error, transient or not.
    pub fn into_runner(self) -> RunnerError {
        RunnerError::Api {
            message: self.to_string(),
            transient: self.is_transient(),
            source: Box::new(self),
        }
    }
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "ProvisionedThroughputExceededException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "SlowDown"
            | "PriorRequestNotComplete"
    )
}

/// The error code and message of an AWS JSON protocol error answer.
pub fn parse_error(header_type: Option<&str>, body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let strip = |s: &str| -> String {
        let s = s.split(':').next().unwrap_or(s);
        s.rsplit('#').next().unwrap_or(s).trim().to_string()
    };
    let code = v
        .get("__type")
        .or_else(|| v.get("code"))
        .and_then(Value::as_str)
        .map(strip)
        .or_else(|| header_type.map(strip))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "UnknownError".to_string());
    let message = v
        .get("message")
        .or_else(|| v.get("Message"))
        .or_else(|| v.get("errorMessage"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            let b = body.trim();
            if b.is_empty() || v.is_object() {
                "(no message)".to_string()
            } else {
                b.chars().take(300).collect()
            }
        });
    (code, message)
}

/// A client of both services for one region.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    env: AwsEnvironment,
    sagemaker: String,
    logs: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("sagemaker", &self.sagemaker)
            .field("logs", &self.logs)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// A client on `env`'s endpoints (`AWS_ENDPOINT_URL_SAGEMAKER`,
    /// `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`, `AWS_ENDPOINT_URL`, else the region's).
    pub fn new(env: AwsEnvironment) -> Api {
        Api {
            http: crate::environments::http::client(
                Duration::from_secs(10),
                Duration::from_secs(60),
            ),
            sagemaker: env.sagemaker_endpoint(),
            logs: env.logs_endpoint(),
            env,
        }
    }

    pub fn environment(&self) -> &AwsEnvironment {
        &self.env
    }

    pub fn endpoint(&self, service: Service) -> &str {
        match service {
            Service::SageMaker => &self.sagemaker,
            Service::Logs => &self.logs,
        }
    }

    /// Calls `operation` with `body`, retrying transient failures (throttling, 5xx, no
    /// answer) a few times with backoff, as every cloud call of the agent does.
    pub async fn call(
        &self,
        service: Service,
        operation: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        retry_transient(operation, ApiError::is_transient, || {
            self.call_once(service, operation, body)
        })
        .await
    }

    /// One attempt of [`Api::call`].
    pub async fn call_once(
        &self,
        service: Service,
        operation: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let endpoint = self.endpoint(service);
        let url = format!("{endpoint}/");
        let target = format!("{}.{operation}", service.target_prefix());
        let payload = serde_json::to_vec(body).expect("JSON");
        let creds =
            self.env
                .signing_credentials()
                .await
                .map_err(|source| ApiError::Credentials {
                    operation: format!("{} {operation}", service.name()),
                    source,
                })?;
        let signing_error = |detail: String| ApiError::Signing {
            operation: format!("{} {operation}", service.name()),
            detail,
        };
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.env.region())
            .name(service.signing_name())
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing_error(e.to_string()))?
            .into();
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(&payload),
        )
        .map_err(|e| signing_error(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| signing_error(e.to_string()))?
            .into_parts();
        let mut req = self.http.post(&url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        let resp = req
            .body(payload)
            .send()
            .await
            .map_err(|source| ApiError::Unreachable {
                service: service.name(),
                operation: operation.to_string(),
                endpoint: endpoint.to_string(),
                cause: crate::environments::http::cause(&source),
                source,
            })?;
        let status = resp.status().as_u16();
        let header_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.map_err(|source| ApiError::Unreachable {
            service: service.name(),
            operation: operation.to_string(),
            endpoint: endpoint.to_string(),
            cause: crate::environments::http::cause(&source),
            source,
        })?;
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(Value::Object(Default::default()));
            }
            return serde_json::from_str(&text).map_err(|e| ApiError::Unreadable {
                service: service.name(),
                operation: operation.to_string(),
                status,
                detail: e.to_string(),
            });
        }
        let (code, message) = parse_error(header_type.as_deref(), &text);
        Err(ApiError::Service {
            service: service.name(),
            operation: operation.to_string(),
            status,
            code,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_as_the_json_protocol_writes_them() {
        assert_eq!(
            parse_error(
                None,
                r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"bad"}"#
            ),
            ("ValidationException".into(), "bad".into())
        );
        assert_eq!(
            parse_error(
                None,
                r#"{"__type":"ResourceLimitExceeded","Message":"quota"}"#
            ),
            ("ResourceLimitExceeded".into(), "quota".into())
        );
        assert_eq!(
            parse_error(
                Some("ThrottlingException:http://internal.amazon.com/"),
                r#"{"message":"Rate exceeded"}"#
            ),
            ("ThrottlingException".into(), "Rate exceeded".into())
        );
        assert_eq!(
            parse_error(None, "<html>bad gateway</html>"),
            ("UnknownError".into(), "<html>bad gateway</html>".into())
        );
    }

    #[test]
    fn transient_and_not_found() {
        let e = |status: u16, code: &str, message: &str| ApiError::Service {
            service: "SageMaker",
            operation: "DescribeTrainingJob".into(),
            status,
            code: code.into(),
            message: message.into(),
        };
        assert!(e(400, "ThrottlingException", "Rate exceeded").is_transient());
        assert!(e(400, "ThrottlingException", "Rate exceeded").is_throttling());
        assert!(e(500, "InternalFailure", "x").is_transient());
        assert!(!e(400, "ValidationException", "bad").is_transient());
        assert!(!e(400, "ResourceLimitExceeded", "quota").is_transient());
        assert!(e(400, "ResourceNotFound", "x").is_not_found());
        assert!(e(400, "ResourceNotFoundException", "x").is_not_found());
        assert!(e(400, "ValidationException", "Requested resource not found.").is_not_found());
        assert!(!e(400, "ValidationException", "bad name").is_not_found());
        let r = e(400, "ValidationException", "bad").into_runner();
        assert!(!r.is_transient());
        assert!(r.to_string().contains("ValidationException: bad"), "{r}");
    }
}

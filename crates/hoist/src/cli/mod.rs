//! The people-facing commands of the `hoist` binary.
//!
//! One module per command group (`login`, `queue`, `launch`, `run`, `agent`, `user`,
//! `team`, `key`); this module holds what they share: the [`Ctx`] every command gets
//! (output format, server address and key), the error types that decide the exit
//! code, and the error report.
//!
//! # Exit codes
//! - 0: success.
//! - 1: failure: the server refused (not found, conflict, forbidden, not logged in),
//!   the server could not be reached, a waited-for run did not finish.
//! - 2: bad usage or invalid input: a usage error, a file or value that does not parse,
//!   or an answer 400/413/422 from the server (a bad request, config or template).

use std::fmt;

use hoist_client::{Client, ClientError, Secret};

pub mod agent;
pub mod credentials;
pub mod input;
pub mod job;
pub mod key;
pub mod launch;
pub mod login;
pub mod output;
pub mod queue;
pub mod run;
pub mod shell_words;
pub mod team;
pub mod user;

pub use output::OutputFormat;

/// The exit-code policy, as shown at the end of `hoist --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure: the server refused the request (not found, conflict, forbidden, not
     logged in), the server could not be reached, or a run waited for with --wait
     did not finish
  2  bad usage or invalid input: a usage error, a file or value that does not parse,
     or a request the server found invalid (HTTP 400, 413, 422)

Environment:
  HOIST_HOST     server URL; overrides the one stored by `hoist login`
  HOIST_API_KEY  API key; overrides the one stored by `hoist login`
  HOIST_LOG      log filter (such as `info` or `hoist=debug`); --log-level wins";

/// Invalid input found on the client side (exit code 2).
#[derive(Debug)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// An invalid-input error (exit code 2).
pub fn invalid(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Invalid(msg.into()))
}

/// Ends the command with this exit code; what had to be said was said already.
#[derive(Debug)]
pub struct Exit(pub u8);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// What every command gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub output: OutputFormat,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// The server and key every command uses: `HOIST_HOST` / `HOIST_API_KEY`, else
    /// what `hoist login` stored.
    pub fn target(&self) -> anyhow::Result<credentials::Target> {
        credentials::Target::resolve()
    }

    /// A client of the server, with the caller's key (an error when there is none).
    pub fn client(&self) -> anyhow::Result<Client> {
        let t = self.target()?;
        let key = t
            .key
            .clone()
            .ok_or_else(|| anyhow::anyhow!(t.no_key_message()))?;
        make_client(&t.host, Some(key))
    }
}

pub fn make_client(host: &str, key: Option<Secret>) -> anyhow::Result<Client> {
    Client::new(host, key).map_err(|e| invalid(e.to_string()))
}

/// The exit code an error means (see the module doc).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(Exit(code)) = cause.downcast_ref::<Exit>() {
            return *code;
        }
        if cause.is::<Invalid>() {
            return 2;
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return match c {
                ClientError::Api {
                    status: 400 | 413 | 422,
                    ..
                } => 2,
                ClientError::BadUrl(_) => 2,
                _ => 1,
            };
        }
    }
    1
}

/// True when the error is a closed stdout (`hoist run list | head -1`): not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints `error: …` (the server's message verbatim, then the problems it listed that
/// the message does not already show) and any hint, on stderr.
pub fn report(err: &anyhow::Error) {
    if err.chain().any(|c| c.is::<Exit>()) {
        return;
    }
    let mut text = format!("error: {}", chain_text(err));
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            match c {
                ClientError::Api {
                    status, details, ..
                } => {
                    for (line, message) in problem_lines(details.as_ref()) {
                        if !text.contains(&message) {
                            text.push('\n');
                            text.push_str(&line);
                        }
                    }
                    if *status == 401 && !text.contains("hoist login") {
                        text.push_str("\nhint: log in with `hoist login`, or set HOIST_API_KEY");
                    }
                }
                ClientError::Transport { .. } => {
                    text.push_str(
                        "\nhint: is the server running? Set its address with `hoist login --host URL` or HOIST_HOST",
                    );
                }
                _ => {}
            }
            break;
        }
    }
    output::err_line(&text);
}

/// The error and its causes joined with `: ` (as `{:#}` does), leaving out a cause whose
/// text an outer message already quotes (many errors name their source in their own
/// message and keep it as the source too).
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if text.contains(&msg) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&msg);
    }
    text
}

/// `details.problems` of an API error: each as a line, and its bare message (to
/// leave out problems the server's message already lists).
fn problem_lines(details: Option<&serde_json::Value>) -> Vec<(String, String)> {
    let Some(list) = details
        .and_then(|d| d.get("problems"))
        .and_then(|p| p.as_array())
    else {
        return Vec::new();
    };
    list.iter()
        .map(|p| {
            let msg = p
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| p.to_string());
            let place = p
                .get("path")
                .or_else(|| p.get("variable"))
                .and_then(|m| m.as_str())
                .filter(|pl| !pl.is_empty());
            let line = match place {
                Some(pl) => format!("  {pl}: {msg}"),
                None => format!("  {msg}"),
            };
            (line, msg)
        })
        .collect()
}

/// Splits `ENTITY/NAME` or `NAME`, with an optional `--entity` that must agree.
pub fn split_ref(
    what: &str,
    text: &str,
    entity: Option<&str>,
) -> anyhow::Result<(Option<String>, String)> {
    let (e, name) = match text.split_once('/') {
        Some((e, n)) => (Some(e.to_string()), n.to_string()),
        None => (None, text.to_string()),
    };
    if name.is_empty() || e.as_deref() == Some("") || name.contains('/') {
        return Err(invalid(format!(
            "{what} {text:?} is not valid: expected NAME or ENTITY/NAME"
        )));
    }
    match (e, entity) {
        (Some(a), Some(b)) if a != b => Err(invalid(format!(
            "{what} {text:?} names entity {a:?} but --entity says {b:?}"
        ))),
        (Some(a), _) => Ok((Some(a), name)),
        (None, b) => Ok((b.map(str::to_string), name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_text_says_a_cause_once() {
        #[derive(Debug)]
        struct Bind {
            source: std::io::Error,
        }
        impl std::fmt::Display for Bind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "cannot listen on 127.0.0.1:1: {}; pick another address",
                    self.source
                )
            }
        }
        impl std::error::Error for Bind {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let err = anyhow::Error::new(Bind { source: io }).context("the server could not start");
        assert_eq!(
            chain_text(&err),
            "the server could not start: cannot listen on 127.0.0.1:1: Address already in use; pick another address"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain_text(&plain), "outer: inner");
    }

    #[test]
    fn exit_codes() {
        let api = |status| {
            anyhow::Error::new(ClientError::Api {
                status,
                code: hoist_core::api::ErrorCode::BadRequest,
                message: "m".into(),
                details: None,
            })
        };
        assert_eq!(exit_code(&api(400)), 2);
        assert_eq!(exit_code(&api(422)), 2);
        assert_eq!(exit_code(&api(404)), 1);
        assert_eq!(exit_code(&api(409)), 1);
        assert_eq!(exit_code(&api(401)), 1);
        assert_eq!(exit_code(&invalid("x")), 2);
        assert_eq!(exit_code(&invalid("x").context("while")), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("x")), 1);
        assert_eq!(exit_code(&anyhow::Error::new(Exit(3))), 3);
    }

    #[test]
    fn refs() {
        assert_eq!(split_ref("queue", "q", None).unwrap(), (None, "q".into()));
        assert_eq!(
            split_ref("queue", "t/q", None).unwrap(),
            (Some("t".into()), "q".into())
        );
        assert_eq!(
            split_ref("queue", "q", Some("t")).unwrap(),
            (Some("t".into()), "q".into())
        );
        assert!(split_ref("queue", "a/q", Some("t")).is_err());
        assert!(split_ref("queue", "/q", None).is_err());
        assert!(split_ref("queue", "a/b/c", None).is_err());
    }

    #[test]
    fn problems() {
        let d = serde_json::json!({"problems": [{"path": "memory", "message": "bad"}, {"variable": "gpus", "message": "too many"}]});
        let lines: Vec<String> = problem_lines(Some(&d))
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(lines, ["  memory: bad", "  gpus: too many"]);
    }
}

//! What every page shares: the layout's context ([`Base`]), times shown in the
//! browser's zone, state badges, and small formatting helpers for templates.

use askama::Template;
use axum::response::Html;
use hoist_core::run::RunState;

use super::WebUser;
use super::assets;

/// The layout's context: who is signed in, the CSRF token for forms, the section.
pub struct Base {
    pub user: String,
    pub admin: bool,
    pub csrf: String,
    /// `overview`, `queues`, `runs`, `jobs`, `agents`: the highlighted nav entry.
    pub section: &'static str,
    pub title: String,
    pub css: String,
    pub js: String,
    pub icon: String,
}

impl Base {
    pub fn new(who: &WebUser, section: &'static str, title: impl Into<String>) -> Base {
        Base {
            user: who.user.name.clone(),
            admin: who.user.admin,
            csrf: who.csrf.clone(),
            section,
            title: title.into(),
            css: assets::url("hoist.css"),
            js: assets::url("hoist.js"),
            icon: assets::url("favicon.svg"),
        }
    }
    /// For pages shown before sign-in.
    pub fn anonymous(title: impl Into<String>) -> Base {
        Base {
            user: String::new(),
            admin: false,
            csrf: String::new(),
            section: "",
            title: title.into(),
            css: assets::url("hoist.css"),
            js: assets::url("hoist.js"),
            icon: assets::url("favicon.svg"),
        }
    }
    /// `aria-current="page"` on the current section's nav link.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub status: u16,
}

/// Renders a page that must not fail (the error page itself).
pub fn html<T: Template>(t: &T) -> Html<String> {
    Html(t.render().unwrap_or_else(|e| {
        tracing::error!(message = "The error page could not be rendered.", error = %e);
        "<!doctype html><title>hoist</title><p>Something went wrong.</p>".to_string()
    }))
}

/// A point in time, shown in UTC by the server and turned into the browser's own
/// zone by `hoist.js` (`<time data-local>`).
#[derive(Clone, Copy, Debug)]
pub struct Ts(pub i64);

impl Ts {
    pub fn iso(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default()
    }
    pub fn utc(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    }
}

/// `1.2 s`, `3 min 4 s`, `2 h 5 min`, `3 d 4 h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        _ if ms < 10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The CSS class of a state badge.
pub fn state_class(state: RunState) -> &'static str {
    match state {
        RunState::Queued | RunState::Claimed => "st-queued",
        RunState::Building | RunState::Starting | RunState::Running | RunState::Stopping => {
            "st-active"
        }
        RunState::Finished => "st-ok",
        RunState::Failed | RunState::Unknown => "st-bad",
        RunState::Stopped | RunState::Cancelled => "st-off",
    }
}

/// Percent-encodes a query value or path segment.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A path segment: like [`urlencode`] but `/` is encoded too.
pub fn seg(s: &str) -> String {
    urlencode(s).replace('/', "%2F")
}

/// Pretty JSON for showing a value.
pub fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(1_234), "1.2 s");
        assert_eq!(duration(42_000), "42 s");
        assert_eq!(duration(184_000), "3 min 4 s");
        assert_eq!(duration(7_500_000), "2 h 5 min");
        assert_eq!(duration(-5), "0.0 s");
    }

    #[test]
    fn urlencode_keeps_paths_and_escapes_the_rest() {
        assert_eq!(
            urlencode("/queues/a b?x=<1>"),
            "/queues/a%20b%3Fx%3D%3C1%3E"
        );
        assert_eq!(seg("a/b"), "a%2Fb");
    }
}

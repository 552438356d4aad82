//! Parsers for single values: durations, URLs, registry URIs, cloud names, paths.
//!
//! Each returns the typed value or the text of the problem (`invalid X; expected Y`)
//! without location; the caller puts the file, line and key in front.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use hoist_core::names::edit_distance;
use hoist_core::secret::MASKED;

use super::{BuildContextStore, DockerHost};

/// Form of a duration, for messages.
pub(crate) const DURATION_FORM: &str = "seconds as an integer, or a number with a unit such as \"90s\", \"5m\", \"1h\", \"1h30m\", \"500ms\"";

/// Parses a duration: an integer number of seconds (`90`), or one or more
/// number-unit pairs with units `ms`, `s`, `m`, `h`, `d` (`90s`, `5m`, `1h30m`).
/// Zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let quoted = shown(text);
    let bad = || format!("invalid duration {quoted:?}; expected {DURATION_FORM}");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let total = if t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| bad())?;
        Duration::from_secs(secs)
    } else {
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let part = match unit {
                "ms" => Some(Duration::from_millis(n)),
                "s" => Some(Duration::from_secs(n)),
                "m" => n.checked_mul(60).map(Duration::from_secs),
                "h" => n.checked_mul(3600).map(Duration::from_secs),
                "d" => n.checked_mul(86_400).map(Duration::from_secs),
                _ => return Err(bad()),
            }
            .ok_or_else(bad)?;
            total = total.checked_add(part).ok_or_else(bad)?;
        }
        total
    };
    if total.is_zero() {
        return Err(format!(
            "invalid duration {quoted:?}: must be more than zero; expected {DURATION_FORM}"
        ));
    }
    Ok(total)
}

/// Writes a duration in the form [`parse_duration`] reads (`1h30m`, `90s` → `1m30s`,
/// `1500ms`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// `<something>` in a value: a placeholder copied from the documentation.
pub(crate) fn placeholder(text: &str) -> Option<&str> {
    let start = text.find('<')?;
    let end = start + text[start..].find('>')?;
    let inner = &text[start + 1..end];
    if !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ' ' | '.'))
    {
        Some(&text[start..=end])
    } else {
        None
    }
}

/// A value as a message may quote it. Every message here (and in `read.rs` and
/// `resolve.rs`) that quotes a configured value quotes this, never the value itself:
/// a mistyped URL is exactly where a password sits.
///
/// - URL user-info: `scheme://user:password@host` → `scheme://user:********@host` and
///   `scheme://token@host` → `scheme://********@host`; without a scheme,
///   `user:password@host/…` → `user:********@host/…`;
/// - query values (`?sv=…&sig=…`, a SAS token): `?sv=********&sig=********`;
/// - anything else that looks like a credential as a whole
///   ([`hoist_core::secret::looks_like_credential`]: a DSN with a password, a `ghp_…`
///   token): `********`.
pub(crate) fn shown(text: &str) -> String {
    let masked = mask_query(&mask_userinfo(text));
    if masked != text {
        return masked;
    }
    if hoist_core::secret::looks_like_credential(text) {
        return MASKED.to_string();
    }
    masked
}

fn mask_userinfo(text: &str) -> String {
    if text.contains("://") {
        return super::render::mask_url(text);
    }
    // `user:password@host…`: only a password is masked (`git@host:a/b` is no secret).
    let end = text
        .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
        .unwrap_or(text.len());
    match text[..end].rfind('@') {
        Some(at) => match text[..at].split_once(':') {
            Some((user, _)) => format!("{user}:{MASKED}{}", &text[at..]),
            None => text.to_string(),
        },
        None => text.to_string(),
    }
}

fn mask_query(text: &str) -> String {
    let Some(q) = text.find('?') else {
        return text.to_string();
    };
    let (head, query) = text.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !v.is_empty() => format!("{k}={MASKED}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}{}{fragment}", pairs.join("&"))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A host name, IPv4 address, or bracketed IPv6 address, with an optional port.
fn parse_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed '[' in the host")?;
        let host = &rest[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address {:?}", shown(host)));
        }
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {:?} after the host", shown(after))),
        };
        (format!("[{host}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("invalid port {:?}", shown(p))),
        },
        None => None,
    };
    if !host.starts_with('[') && (host.is_empty() || !host.split('.').all(is_dns_label)) {
        return Err(format!("invalid host name {:?}", shown(&host)));
    }
    Ok((host, port))
}

/// Whether a host (as returned by `parse_host_port`) is a loopback address.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The hoist server URL: `http(s)://HOST[:PORT][/PATH]`, returned without a trailing
/// slash.
pub(crate) fn parse_base_url(text: &str) -> Result<String, String> {
    let quoted = shown(text);
    const FORM: &str = "expected http://HOST[:PORT] or https://HOST[:PORT], optionally with a path";
    let t = text.trim();
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .ok_or_else(|| format!("invalid URL {quoted:?}; {FORM}"))?;
    if rest.contains(char::is_whitespace) {
        return Err(format!("invalid URL {quoted:?} (contains spaces); {FORM}"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "credentials do not belong in the URL {:?}; use `hoist login` or HOIST_API_KEY",
            shown(t)
        ));
    }
    if path.contains('?') || path.contains('#') || authority.contains('?') {
        return Err(format!(
            "invalid URL {quoted:?} (has a query or fragment); {FORM}"
        ));
    }
    parse_host_port(authority).map_err(|why| format!("invalid URL {quoted:?}: {why}; {FORM}"))?;
    Ok(t.trim_end_matches('/').to_string())
}

/// A repository path in the OCI sense: `/`-separated components of lowercase letters,
/// digits and `.`, `_`, `-`, each starting and ending with a letter or digit.
pub(crate) fn is_repository_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        })
}

pub(crate) const REPOSITORY_FORM: &str =
    "lowercase letters, digits, '.', '_', '-', components separated by '/'";

fn strip_https(s: &str) -> &str {
    s.strip_prefix("https://").unwrap_or(s)
}

fn reject_tag(repo: &str, uri: &str) -> Result<(), String> {
    let quoted = shown(uri);
    if repo.contains(':') || repo.contains('@') {
        return Err(format!(
            "{quoted:?} names a tag or digest; give the repository only (hoist tags images by content hash)"
        ));
    }
    Ok(())
}

/// `aws-region` style: `us-east-1`, `eu-central-1`, `us-gov-west-1`.
pub(crate) fn is_aws_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// `gcp-region` style: `us-central1`, `europe-west4`, `northamerica-northeast1`.
pub(crate) fn is_gcp_region(s: &str) -> bool {
    let Some((geo, rest)) = s.split_once('-') else {
        return false;
    };
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    !geo.is_empty()
        && geo.bytes().all(|b| b.is_ascii_lowercase())
        && letters > 0
        && letters < rest.len()
        && rest[letters..].bytes().all(|b| b.is_ascii_digit())
}

/// A GCP project id: 6 to 30 lowercase letters, digits and hyphens, starting with a
/// letter (a domain-scoped `example.com:project` is accepted too).
pub(crate) fn is_gcp_project(s: &str) -> bool {
    let id = match s.rsplit_once(':') {
        Some((domain, id)) if !domain.is_empty() && domain.split('.').all(is_dns_label) => id,
        Some(_) => return false,
        None => s,
    };
    (6..=30).contains(&id.len())
        && id.as_bytes()[0].is_ascii_lowercase()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.ends_with('-')
}

/// An ECR repository URI, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EcrUri {
    pub account_id: String,
    pub region: String,
    pub repository: String,
}

pub(crate) const ECR_URI_FORM: &str = "ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY";

/// Whether the host part of `uri` is an ECR host.
pub(crate) fn looks_ecr(uri: &str) -> bool {
    let host = strip_https(uri).split('/').next().unwrap_or("");
    host.ends_with(".amazonaws.com") && host.contains(".ecr.")
}

/// `ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO`, or the documentation's
/// `ACCOUNT.ecr.REGION.amazonaws.com/REPO`, optionally with `https://`.
pub(crate) fn parse_ecr_uri(uri: &str) -> Result<EcrUri, String> {
    let quoted = shown(uri);
    let bad =
        |why: &str| format!("invalid ECR repository URI {quoted:?}{why}; expected {ECR_URI_FORM}");
    let s = strip_https(uri.trim());
    let (host, repo) = s.split_once('/').ok_or_else(|| bad(" (no repository)"))?;
    let labels: Vec<&str> = host.split('.').collect();
    let (account, region) = match labels.as_slice() {
        [a, "dkr", "ecr", r, "amazonaws", "com"] | [a, "ecr", r, "amazonaws", "com"] => (*a, *r),
        _ => return Err(bad("")),
    };
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(&format!(
            " (account id {:?} is not 12 digits)",
            shown(account)
        )));
    }
    if !is_aws_region(region) {
        return Err(bad(&format!(
            " (region {:?} is not an AWS region)",
            shown(region)
        )));
    }
    let repo = repo.trim_end_matches('/');
    reject_tag(repo, uri)?;
    if !is_repository_path(repo) {
        return Err(bad(&format!(
            " (repository {:?} must be {REPOSITORY_FORM})",
            shown(repo)
        )));
    }
    Ok(EcrUri {
        account_id: account.to_string(),
        region: region.to_string(),
        repository: repo.to_string(),
    })
}

/// A GCP Artifact Registry URI, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GcrUri {
    pub region: String,
    pub project: String,
    pub repository: String,
    pub image_name: Option<String>,
}

pub(crate) const GCR_URI_FORM: &str = "REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE";

pub(crate) fn looks_gcr(uri: &str) -> bool {
    let host = strip_https(uri).split('/').next().unwrap_or("");
    host.ends_with("-docker.pkg.dev")
}

/// `REGION-docker.pkg.dev/PROJECT/REPOSITORY[/IMAGE]`.
pub(crate) fn parse_gcr_uri(uri: &str) -> Result<GcrUri, String> {
    let quoted = shown(uri);
    let bad = |why: &str| {
        format!("invalid Artifact Registry URI {quoted:?}{why}; expected {GCR_URI_FORM}")
    };
    let s = strip_https(uri.trim()).trim_end_matches('/');
    let mut parts = s.splitn(4, '/');
    let host = parts.next().unwrap_or("");
    let region = host
        .strip_suffix("-docker.pkg.dev")
        .ok_or_else(|| bad(""))?;
    if !is_gcp_region(region) {
        return Err(bad(&format!(
            " (region {:?} is not a GCP region)",
            shown(region)
        )));
    }
    let project = parts.next().ok_or_else(|| bad(" (no project)"))?;
    if !is_gcp_project(project) {
        return Err(bad(&format!(
            " (project {:?} is not a GCP project id)",
            shown(project)
        )));
    }
    let repository = parts.next().ok_or_else(|| bad(" (no repository)"))?;
    let image = parts.next();
    reject_tag(s, uri)?;
    if !is_repository_path(repository) || repository.contains('/') {
        return Err(bad(&format!(
            " (repository {:?} is not a valid name)",
            shown(repository)
        )));
    }
    if let Some(image) = image
        && !is_repository_path(image)
    {
        return Err(bad(&format!(
            " (image {:?} must be {REPOSITORY_FORM})",
            shown(image)
        )));
    }
    Ok(GcrUri {
        region: region.to_string(),
        project: project.to_string(),
        repository: repository.to_string(),
        image_name: image.map(str::to_string),
    })
}

pub(crate) const ACR_URI_FORM: &str = "https://REGISTRY.azurecr.io/REPOSITORY";

pub(crate) fn looks_acr(uri: &str) -> bool {
    let host = strip_https(uri).split('/').next().unwrap_or("");
    host.ends_with(".azurecr.io")
}

/// `https://NAME.azurecr.io/REPOSITORY` (the scheme may be left out). Returns the
/// registry name and the repository.
pub(crate) fn parse_acr_uri(uri: &str) -> Result<(String, String), String> {
    let quoted = shown(uri);
    let bad = |why: &str| {
        format!("invalid Azure Container Registry URI {quoted:?}{why}; expected {ACR_URI_FORM}")
    };
    let s = strip_https(uri.trim()).trim_end_matches('/');
    let (host, repo) = s.split_once('/').ok_or_else(|| bad(" (no repository)"))?;
    let name = host.strip_suffix(".azurecr.io").ok_or_else(|| bad(""))?;
    if !is_dns_label(name) || name.contains('_') {
        return Err(bad(&format!(
            " (registry name {:?} is not valid)",
            shown(name)
        )));
    }
    reject_tag(repo, uri)?;
    if !is_repository_path(repo) {
        return Err(bad(&format!(
            " (repository {:?} must be {REPOSITORY_FORM})",
            shown(repo)
        )));
    }
    Ok((name.to_string(), repo.to_string()))
}

/// A generic OCI registry repository URI, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OciUri {
    pub plain_http: bool,
    pub host: String,
    pub repository: String,
}

pub(crate) const OCI_URI_FORM: &str = "HOST[:PORT]/REPOSITORY";

/// `[http://|https://]HOST[:PORT]/REPOSITORY`.
pub(crate) fn parse_oci_uri(uri: &str) -> Result<OciUri, String> {
    let quoted = shown(uri);
    let bad = |why: &str| format!("invalid registry URI {quoted:?}{why}; expected {OCI_URI_FORM}");
    let t = uri.trim();
    let (plain_http, s) = if let Some(rest) = t.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = t.strip_prefix("https://") {
        (false, rest)
    } else if t.contains("://") {
        return Err(bad(" (only http:// and https:// are possible)"));
    } else {
        (false, t)
    };
    let s = s.trim_end_matches('/');
    let (authority, repo) = s.split_once('/').ok_or_else(|| bad(" (no repository)"))?;
    if authority.contains('@') {
        return Err(format!(
            "credentials do not belong in the registry URI {:?}; use registry.credentials-file",
            shown(t)
        ));
    }
    let (host, port) = parse_host_port(authority).map_err(|why| bad(&format!(" ({why})")))?;
    reject_tag(repo, uri)?;
    if !is_repository_path(repo) {
        return Err(bad(&format!(
            " (repository {:?} must be {REPOSITORY_FORM})",
            shown(repo)
        )));
    }
    let host = match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    Ok(OciUri {
        plain_http,
        host,
        repository: repo.to_string(),
    })
}

pub(crate) const STORE_FORM: &str = "s3://BUCKET/PREFIX (aws), gs://BUCKET/PREFIX (gcp) or https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX (azure)";

fn is_bucket(s: &str, allow_underscore: bool) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'.'
                || b == b'-'
                || (allow_underscore && b == b'_')
        })
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn clean_prefix(prefix: &str, uri: &str) -> Result<String, String> {
    let quoted = shown(uri);
    if prefix.contains('?') || prefix.contains('#') {
        return Err(format!(
            "{quoted:?} has a query string (a SAS token?); credentials come from the environment, not the URI; expected {STORE_FORM}"
        ));
    }
    if prefix.contains(char::is_whitespace) || prefix.split('/').any(|c| c == "..") {
        return Err(format!(
            "invalid prefix in {quoted:?}; expected {STORE_FORM}"
        ));
    }
    Ok(prefix.trim_matches('/').to_string())
}

/// Where the kaniko builder uploads build contexts.
pub(crate) fn parse_build_context_store(uri: &str) -> Result<BuildContextStore, String> {
    let quoted = shown(uri);
    let t = uri.trim();
    let split = |rest: &str| -> (String, String) {
        match rest.split_once('/') {
            Some((b, p)) => (b.to_string(), p.to_string()),
            None => (rest.to_string(), String::new()),
        }
    };
    if let Some(rest) = t.strip_prefix("s3://") {
        let (bucket, prefix) = split(rest);
        if !is_bucket(&bucket, false) {
            return Err(format!(
                "invalid S3 bucket name {:?} in {quoted:?}; expected {STORE_FORM}",
                shown(&bucket)
            ));
        }
        Ok(BuildContextStore::S3 {
            bucket,
            prefix: clean_prefix(&prefix, uri)?,
        })
    } else if let Some(rest) = t.strip_prefix("gs://") {
        let (bucket, prefix) = split(rest);
        if !is_bucket(&bucket, true) {
            return Err(format!(
                "invalid GCS bucket name {:?} in {quoted:?}; expected {STORE_FORM}",
                shown(&bucket)
            ));
        }
        Ok(BuildContextStore::Gcs {
            bucket,
            prefix: clean_prefix(&prefix, uri)?,
        })
    } else if let Some(rest) = t.strip_prefix("https://")
        && let Some((host, path)) = rest.split_once('/')
        && let Some(account) = host.strip_suffix(".blob.core.windows.net")
    {
        if !is_dns_label(account) || account.contains('_') {
            return Err(format!(
                "invalid storage account {:?} in {quoted:?}; expected {STORE_FORM}",
                shown(account)
            ));
        }
        let (container, prefix) = split(path);
        if container.is_empty() || !is_dns_label(&container) || container.contains('_') {
            return Err(format!(
                "{quoted:?} names no valid blob container; expected {STORE_FORM}"
            ));
        }
        Ok(BuildContextStore::AzureBlob {
            account: account.to_string(),
            container,
            prefix: clean_prefix(&prefix, uri)?,
        })
    } else {
        Err(format!(
            "unsupported build context store {quoted:?}; expected {STORE_FORM}"
        ))
    }
}

pub(crate) const DOCKER_HOST_FORM: &str =
    "a unix socket (/var/run/docker.sock or unix:///var/run/docker.sock) or tcp://127.0.0.1:PORT";

/// The Docker Engine endpoint: a unix socket path, or a loopback TCP address.
pub(crate) fn parse_docker_host(text: &str) -> Result<DockerHost, String> {
    let quoted = shown(text);
    let t = text.trim();
    if let Some(path) = t.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!(
                "invalid Docker host {quoted:?}; expected {DOCKER_HOST_FORM}"
            ));
        }
        return Ok(DockerHost::Unix(PathBuf::from(path)));
    }
    if t.starts_with('/') {
        return Ok(DockerHost::Unix(PathBuf::from(t)));
    }
    if let Some(rest) = t.strip_prefix("tcp://") {
        let rest = rest.trim_end_matches('/');
        let (host, port) = parse_host_port(rest).map_err(|why| {
            format!("invalid Docker host {quoted:?} ({why}); expected {DOCKER_HOST_FORM}")
        })?;
        if !is_loopback_host(&host) {
            return Err(format!(
                "Docker host {quoted:?} is not a loopback address (a plain-TCP Docker API gives root on its machine to anyone who reaches it); expected {DOCKER_HOST_FORM}"
            ));
        }
        return Ok(DockerHost::Tcp {
            host,
            port: port.unwrap_or(2375),
        });
    }
    Err(format!(
        "invalid Docker host {quoted:?}; expected {DOCKER_HOST_FORM}"
    ))
}

/// A Kubernetes DNS-1123 label of at most `max` characters.
pub(crate) fn is_k8s_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A Kubernetes object name (DNS-1123 subdomain).
pub(crate) fn is_k8s_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_k8s_label(l, 63))
}

/// A key inside a Kubernetes Secret.
pub(crate) fn is_k8s_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An environment variable name.
pub(crate) fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A Linux capability (`SYS_PTRACE`, `CAP_SYS_PTRACE`, `sys_ptrace`, `ALL`),
/// normalised to upper case without the `CAP_` prefix.
pub(crate) fn parse_capability(s: &str) -> Result<String, String> {
    let quoted = shown(s);
    let up = s.trim().to_ascii_uppercase();
    let name = up.strip_prefix("CAP_").unwrap_or(&up);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "invalid capability {quoted:?}; expected a Linux capability name such as SYS_PTRACE or NET_ADMIN"
        ));
    }
    Ok(name.to_string())
}

pub(crate) const PLATFORM_FORM: &str =
    "OS/ARCH or OS/ARCH/VARIANT, such as linux/amd64 or linux/arm64";

/// A build platform (`linux/amd64`, `linux/arm/v7`): two or three lowercase parts.
pub(crate) fn parse_platform(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let part_ok = |p: &&str| {
        !p.is_empty()
            && p.len() <= 32
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if (2..=3).contains(&parts.len()) && parts.iter().all(part_ok) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid platform {:?}; expected {PLATFORM_FORM}",
            shown(s)
        ))
    }
}

/// An absolute path (`~/` is expanded with `home`); `..` components are refused.
pub(crate) fn parse_abs_path(text: &str, home: Option<&str>) -> Result<PathBuf, String> {
    let quoted = shown(text);
    let t = text.trim();
    let path = if let Some(rest) = t.strip_prefix("~/") {
        match home {
            Some(h) if h.starts_with('/') => Path::new(h).join(rest),
            _ => {
                return Err(format!(
                    "cannot expand {quoted:?}: HOME is not set; expected an absolute path"
                ));
            }
        }
    } else if t == "~" {
        match home {
            Some(h) if h.starts_with('/') => PathBuf::from(h),
            _ => {
                return Err(format!(
                    "cannot expand {quoted:?}: HOME is not set; expected an absolute path"
                ));
            }
        }
    } else {
        PathBuf::from(t)
    };
    if !path.is_absolute() {
        return Err(format!(
            "relative path {quoted:?}; expected an absolute path (or one starting with ~/)"
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "path {quoted:?} contains '..'; expected an absolute path without '..'"
        ));
    }
    // Drop trailing slashes and `.` components.
    Ok(path.components().collect())
}

/// An image reference (`python:3.12-slim`, `registry:5000/x/y@sha256:…`): no spaces,
/// no upper case in the repository part.
pub(crate) fn parse_image_ref(text: &str) -> Result<String, String> {
    let quoted = shown(text);
    let t = text.trim();
    const FORM: &str = "expected an image reference such as python:3.12-slim";
    if t.is_empty() || t.len() > 512 || t.contains(char::is_whitespace) || t.contains("://") {
        return Err(format!("invalid image reference {quoted:?}; {FORM}"));
    }
    Ok(t.to_string())
}

/// The candidate closest to `word` (case and `-`/`_` ignored), if close enough to be
/// a likely typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let w = norm(word);
    if w.is_empty() || w.chars().count() > 64 {
        return None;
    }
    // Ties (`max-job` is as close to `max_jobs` as to `max-jobs` once `-` and `_` are
    // alike) go to the spelling closest as written.
    let mut best: Option<((usize, usize), &str)> = None;
    for &c in candidates {
        let d = (edit_distance(&w, &norm(c)), edit_distance(word, c));
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let ((d, _), c) = best?;
    let limit = (w.chars().count() / 3).max(2);
    (d <= limit).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        for bad in [
            "",
            "0",
            "0s",
            "5 minutes",
            "m",
            "5x",
            "1.5s",
            "-1s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in ["1m", "1h30m", "1500ms", "2d3h4m5s", "59s"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn regions() {
        assert!(is_aws_region("us-east-1"));
        assert!(is_aws_region("us-gov-west-1"));
        assert!(!is_aws_region("us-central1"));
        assert!(is_gcp_region("us-central1"));
        assert!(is_gcp_region("northamerica-northeast1"));
        assert!(!is_gcp_region("us-east-1"));
        assert!(is_gcp_project("my-project-123"));
        assert!(!is_gcp_project("My-Project"));
    }

    #[test]
    fn registry_uris() {
        let e = parse_ecr_uri("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-repo").unwrap();
        assert_eq!(
            (e.region.as_str(), e.repository.as_str()),
            ("us-east-1", "my-repo")
        );
        assert!(parse_ecr_uri("123456789012.ecr.us-east-1.amazonaws.com/my-repo").is_ok());
        assert!(parse_ecr_uri("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-repo:v1").is_err());
        let g = parse_gcr_uri("us-central1-docker.pkg.dev/my-project/repo/image").unwrap();
        assert_eq!(g.image_name.as_deref(), Some("image"));
        assert!(parse_gcr_uri("us-central1-docker.pkg.dev/my-project").is_err());
        assert_eq!(
            parse_acr_uri("https://my-registry.azurecr.io/my-repository").unwrap(),
            ("my-registry".to_string(), "my-repository".to_string())
        );
        let o = parse_oci_uri("http://127.0.0.1:5000/hoist/images").unwrap();
        assert!(o.plain_http);
        assert_eq!(o.host, "127.0.0.1:5000");
        assert!(parse_oci_uri("user:pw@127.0.0.1:5000/x").is_err());
    }

    #[test]
    fn suggestions() {
        let keys = ["max_jobs", "max-jobs", "queues", "environment"];
        assert_eq!(closest("max_job", &keys), Some("max_jobs"));
        assert_eq!(closest("Max-Jobs", &keys), Some("max-jobs"));
        assert_eq!(closest("max-job", &keys), Some("max-jobs"));
        assert_eq!(closest("enviroment", &keys), Some("environment"));
        assert_eq!(closest("zzzzzz", &keys), None);
    }

    #[test]
    fn shown_values_hide_credentials() {
        let cases = [
            ("https://u:pw@h/x", "https://u:********@h/x"),
            ("https://tok@h/x", "https://********@h/x"),
            ("u:pw@h:5000/x", "u:********@h:5000/x"),
            ("git@github.com:a/b.git", "git@github.com:a/b.git"),
            (
                "https://a.blob.core.windows.net/c?sv=1&sig=pw&x",
                "https://a.blob.core.windows.net/c?sv=********&sig=********&x",
            ),
            ("host=db password=pw", "********"),
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "********"),
            ("python:3.12-slim", "python:3.12-slim"),
            ("", ""),
        ];
        for (value, expected) in cases {
            assert_eq!(shown(value), expected, "{value}");
        }
    }

    #[test]
    fn placeholders() {
        assert_eq!(placeholder("<aws-region>"), Some("<aws-region>"));
        assert_eq!(
            placeholder("<account-id>.ecr.x.amazonaws.com/r"),
            Some("<account-id>")
        );
        assert_eq!(placeholder("plain"), None);
    }
}

//! `--blob-store` URLs: `file:///PATH`, `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`,
//! `az://ACCOUNT/CONTAINER/PREFIX` or `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`.
//!
//! A URL never carries a credential: user info, a query (an Azure SAS token) or a
//! fragment is refused, and the refusal does not repeat that part.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::BlobStoreError;

/// Where the server keeps its blobs (code artifacts, run log segments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStoreUrl {
    /// A directory (the default: `blobs/` in the data dir).
    File(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
    },
    Gcs {
        bucket: String,
        prefix: String,
    },
    Azure {
        account: String,
        container: String,
        prefix: String,
    },
}

/// The accepted forms, for messages.
pub const FORMS: &str = "file:///PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://ACCOUNT/CONTAINER/PREFIX or https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX";

impl BlobStoreUrl {
    /// Whether this is an object store (needs the `blob-cloud` feature).
    pub fn is_cloud(&self) -> bool {
        !matches!(self, BlobStoreUrl::File(_))
    }

    /// The object prefix (empty for a directory).
    pub fn prefix(&self) -> &str {
        match self {
            BlobStoreUrl::File(_) => "",
            BlobStoreUrl::S3 { prefix, .. }
            | BlobStoreUrl::Gcs { prefix, .. }
            | BlobStoreUrl::Azure { prefix, .. } => prefix,
        }
    }

    pub fn parse(s: &str) -> Result<BlobStoreUrl, BlobStoreError> {
        let bad = |why: String| BlobStoreError::Url { url: shown(s), why };
        let s = s.trim();
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(bad(format!(
                "expected one of {FORMS} (for a directory, --blob-dir PATH works too)"
            )));
        };
        if rest.contains(['?', '#']) {
            return Err(bad(
                "a blob store URL has no query or fragment; credentials come from the environment (see `hoist server --help`)".into(),
            ));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the URL contains whitespace".into()));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(bad(
                "a blob store URL holds no user name or password; credentials come from the environment (see `hoist server --help`)".into(),
            ));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !authority.is_empty() && authority != "localhost" {
                    return Err(bad(format!(
                        "a file URL names a local directory, file:///PATH, not host {authority:?}"
                    )));
                }
                let path = format!("/{path}");
                if path == "/" || path.split('/').any(|p| p == "..") {
                    return Err(bad(
                        "expected file:///PATH with an absolute directory path (no `..`)".into(),
                    ));
                }
                Ok(BlobStoreUrl::File(PathBuf::from(path)))
            }
            "s3" => {
                check_bucket(authority, 3, 63, "an S3 bucket").map_err(bad)?;
                Ok(BlobStoreUrl::S3 {
                    bucket: authority.to_string(),
                    prefix: prefix(path).map_err(bad)?,
                })
            }
            "gs" => {
                check_bucket(authority, 3, 222, "a GCS bucket").map_err(bad)?;
                Ok(BlobStoreUrl::Gcs {
                    bucket: authority.to_string(),
                    prefix: prefix(path).map_err(bad)?,
                })
            }
            "az" | "azure" => {
                let (container, path) = path.split_once('/').unwrap_or((path, ""));
                azure(authority, container, path).map_err(bad)
            }
            "https" => {
                let host = authority.to_ascii_lowercase();
                let Some(account) = host.strip_suffix(".blob.core.windows.net") else {
                    return Err(bad(format!(
                        "an https URL is an Azure Blob container, https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX; for another endpoint use az://ACCOUNT/CONTAINER/PREFIX with AZURE_STORAGE_BLOB_ENDPOINT (the forms: {FORMS})"
                    )));
                };
                let (container, path) = path.split_once('/').unwrap_or((path, ""));
                azure(account, container, path).map_err(bad)
            }
            other => Err(bad(format!(
                "unknown scheme {other:?}; expected one of {FORMS}"
            ))),
        }
    }
}

fn azure(account: &str, container: &str, path: &str) -> Result<BlobStoreUrl, String> {
    let ok_account = (3..=24).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok_account {
        return Err(format!(
            "{account:?} is not an Azure storage account name (3 to 24 lowercase letters and digits)"
        ));
    }
    if container.is_empty() {
        return Err("the URL names no container: az://ACCOUNT/CONTAINER/PREFIX".into());
    }
    check_bucket(container, 3, 63, "an Azure Blob container")?;
    Ok(BlobStoreUrl::Azure {
        account: account.to_string(),
        container: container.to_string(),
        prefix: prefix(path)?,
    })
}

fn check_bucket(name: &str, min: usize, max: usize, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "the URL names no bucket; {what} name comes right after the scheme"
        ));
    }
    let ok = (min..=max).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not {what} name ({min} to {max} lowercase letters, digits, `-`, `.`, starting and ending with a letter or digit)"
        ))
    }
}

/// The prefix without leading or trailing slashes; no empty, `.` or `..` segments.
fn prefix(path: &str) -> Result<String, String> {
    let p = path.trim_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!(
            "the prefix {p:?} has an empty, `.` or `..` segment"
        ));
    }
    Ok(p.to_string())
}

/// The URL as it may be shown: without user info, query or fragment, and cut short.
fn shown(s: &str) -> String {
    let s = s.trim();
    let mut out = s.split(['?', '#']).next().unwrap_or("").to_string();
    if let Some((scheme, rest)) = out.split_once("://") {
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, None), |(a, p)| (a, Some(p)));
        if let Some((_, host)) = authority.rsplit_once('@') {
            out = format!(
                "{scheme}://…@{host}{}",
                path.map(|p| format!("/{p}")).unwrap_or_default()
            );
        }
    }
    if out.len() != s.len() && !out.contains('…') {
        out.push('…');
    }
    out.chars().take(200).collect()
}

impl fmt::Display for BlobStoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with = |f: &mut fmt::Formatter<'_>, head: String, prefix: &str| {
            if prefix.is_empty() {
                write!(f, "{head}")
            } else {
                write!(f, "{head}/{prefix}")
            }
        };
        match self {
            BlobStoreUrl::File(p) => write!(f, "file://{}", p.display()),
            BlobStoreUrl::S3 { bucket, prefix } => with(f, format!("s3://{bucket}"), prefix),
            BlobStoreUrl::Gcs { bucket, prefix } => with(f, format!("gs://{bucket}"), prefix),
            BlobStoreUrl::Azure {
                account,
                container,
                prefix,
            } => with(f, format!("az://{account}/{container}"), prefix),
        }
    }
}

impl FromStr for BlobStoreUrl {
    type Err = BlobStoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlobStoreUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let ok = |s: &str| BlobStoreUrl::parse(s).unwrap();
        assert_eq!(
            ok("file:///var/lib/hoist/blobs"),
            BlobStoreUrl::File("/var/lib/hoist/blobs".into())
        );
        assert_eq!(
            ok("s3://my-bucket/a/b/"),
            BlobStoreUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            ok("gs://b_1x"),
            BlobStoreUrl::Gcs {
                bucket: "b_1x".into(),
                prefix: "".into()
            }
        );
        let az = BlobStoreUrl::Azure {
            account: "acct1".into(),
            container: "blobs".into(),
            prefix: "hoist".into(),
        };
        assert_eq!(ok("az://acct1/blobs/hoist"), az);
        assert_eq!(ok("https://acct1.blob.core.windows.net/blobs/hoist/"), az);
        assert_eq!(az.to_string(), "az://acct1/blobs/hoist");
        assert_eq!(ok("s3://my-bucket").to_string(), "s3://my-bucket");
    }

    #[test]
    fn refusals_say_why_and_never_echo_credentials() {
        for (url, why) in [
            ("/var/blobs", "expected one of"),
            ("ftp://x/y", "unknown scheme"),
            ("s3://", "names no bucket"),
            ("s3://Bad_Bucket!/p", "is not an S3 bucket name"),
            ("s3://bucket/a//b", "empty, `.` or `..` segment"),
            ("az://acct1", "names no container"),
            ("az://ACCT/c1c/p", "not an Azure storage account name"),
            ("https://example.com/c/p", "is an Azure Blob container"),
            ("file://host/x", "local directory"),
            ("file:///", "absolute directory"),
            (
                "s3://AKIAXXXX:hunter2secret@bucket/p",
                "holds no user name or password",
            ),
            (
                "https://acct1.blob.core.windows.net/c1c/p?sig=hunter2secret",
                "no query",
            ),
        ] {
            let e = BlobStoreUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(e.starts_with("invalid blob store URL"), "{e}");
            assert!(!e.contains("hunter2secret"), "{e}");
        }
    }
}

use std::path::PathBuf;

use crate::human_bytes;

/// Why a context could not be packed or unpacked. Every variant names the path
/// concerned (relative to the context root for entries, absolute for the root or the
/// destination).
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Reading or writing `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The root to pack, or the destination to unpack into, is not a directory.
    #[error("{}: not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// More file data than allowed; `biggest` are the largest files (path, bytes),
    /// largest first.
    #[error("{}", too_large(*limit, *total, biggest))]
    TooLarge {
        limit: u64,
        total: u64,
        biggest: Vec<(String, u64)>,
    },
    /// A symbolic link whose target is absolute or leads outside the context.
    #[error(
        "{path}: symbolic link to {target:?} points outside the context; make it a relative link to a file inside the directory, or copy the file in"
    )]
    LinkEscapes { path: String, target: String },
    /// A socket, FIFO or device file.
    #[error(
        "{path}: {kind} cannot be part of a build context; remove it or list it in .hoistignore"
    )]
    SpecialFile { path: String, kind: &'static str },
    /// A file or link name that is not UTF-8.
    #[error(
        "{}: the name is not valid UTF-8; rename it or list it in .hoistignore",
        path.display()
    )]
    NonUtf8 { path: PathBuf },
    /// A file changed size or type while it was being packed.
    #[error("{path}: changed while it was being packed; try again")]
    Changed { path: String },
    /// An archive entry with an absolute path.
    #[error("{path}: absolute path in the archive")]
    AbsolutePath { path: String },
    /// An archive entry (or link target) with a `..` component.
    #[error("{path}: `..` in a path of the archive")]
    ParentDir { path: String },
    /// An archive entry that would be written through a symbolic link (`link`).
    #[error("{path}: would be written through the symbolic link {link}")]
    ThroughLink { path: String, link: String },
    /// An archive entry whose parent is not a directory, or a file where a directory
    /// is (or the other way round).
    #[error("{path}: {message}")]
    Conflict { path: String, message: String },
    /// An archive entry of a kind that is not supported (hard link to a missing file,
    /// sparse file, …).
    #[error("{path}: {message}")]
    Unsupported { path: String, message: String },
    /// More entries than [`crate::MAX_ENTRIES`].
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    /// A path given by the caller (an extra file) is not a plain relative name.
    #[error("{path}: {message}")]
    InvalidPath { path: String, message: String },
    /// The archive is not a (gzipped) tar, or is truncated.
    #[error("invalid archive: {message}")]
    Corrupt { message: String },
    /// The gzip stream unpacks to more than `max_ratio` times its size: a
    /// decompression bomb, or files so repetitive they do not belong in a build
    /// context.
    #[error(
        "the archive unpacks to more than {max_ratio} times its compressed size ({} from {} read so far), which is refused as a decompression bomb; leave huge repetitive files (zeros, logs, data sets) out with .hoistignore",
        human_bytes(*unpacked),
        human_bytes(*packed)
    )]
    CompressionRatio {
        unpacked: u64,
        packed: u64,
        max_ratio: u64,
    },
    /// Entries that unpacking would refuse, each with its path ([`crate::inspect`]).
    #[error("{}", unsafe_entries(problems))]
    Unsafe { problems: Vec<ContextError> },
}

fn unsafe_entries(problems: &[ContextError]) -> String {
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!(
        "the archive has {} unsafe entr{}: {}",
        problems.len(),
        if problems.len() == 1 { "y" } else { "ies" },
        list.join("; ")
    )
}

fn too_large(limit: u64, total: u64, biggest: &[(String, u64)]) -> String {
    let mut s = format!(
        "the build context is {} ({total} bytes), over the limit of {} ({limit} bytes)",
        human_bytes(total),
        human_bytes(limit)
    );
    if !biggest.is_empty() {
        s.push_str("; biggest files: ");
        let list: Vec<String> = biggest
            .iter()
            .map(|(p, n)| format!("{p} ({})", human_bytes(*n)))
            .collect();
        s.push_str(&list.join(", "));
        s.push_str("; leave them out with .hoistignore or .gitignore");
    }
    s
}

impl ContextError {
    /// The archive entry (or packed path) the error is about, when it is about one.
    pub fn entry(&self) -> Option<&str> {
        match self {
            ContextError::LinkEscapes { path, .. }
            | ContextError::SpecialFile { path, .. }
            | ContextError::Changed { path }
            | ContextError::AbsolutePath { path }
            | ContextError::ParentDir { path }
            | ContextError::ThroughLink { path, .. }
            | ContextError::Conflict { path, .. }
            | ContextError::Unsupported { path, .. }
            | ContextError::InvalidPath { path, .. } => Some(path),
            ContextError::TooLarge { biggest, .. } => biggest.first().map(|(p, _)| p.as_str()),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ContextError {
        ContextError::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_names_the_biggest_files() {
        let e = ContextError::TooLarge {
            limit: 1 << 20,
            total: 3 << 20,
            biggest: vec![("data/big.bin".into(), 2 << 20), ("a.txt".into(), 10)],
        };
        let m = e.to_string();
        assert!(m.contains("3.0 MiB"), "{m}");
        assert!(m.contains("limit of 1.0 MiB"), "{m}");
        assert!(m.contains("data/big.bin (2.0 MiB)"), "{m}");
        assert!(m.contains(".hoistignore"), "{m}");
    }
}

//! hoist-context: deterministic build contexts.
//!
//! A job's code travels as a tarball: the CLI packs a directory ([`pack_dir`]) and
//! uploads it as a code artifact; the agent unpacks it ([`unpack`]) and packs the build
//! context it sends to the Docker Engine API ([`pack_for_build`]). The same tree gives
//! the same bytes, hence the same digest, on any machine and at any time, so a content
//! hash can name the artifact and the image built from it.
//!
//! # What goes in
//!
//! [`pack_dir`] walks the directory with the `ignore` crate:
//! - `.gitignore` files anywhere in the tree apply (with git's semantics, whether or
//!   not the directory is a git checkout), and so do `.hoistignore` files (same
//!   syntax, applied after `.gitignore`, so a `.hoistignore` can re-include with `!`).
//!   Only ignore files *inside* the directory count: not its parents', not the global
//!   git excludes, not `.git/info/exclude`, so the result does not depend on the
//!   machine it runs on. `.dockerignore` is not read.
//! - Anything named `.git` (directory or submodule file) is always left out.
//! - Hidden files are included unless ignored; the ignore files themselves are
//!   included.
//! - Symbolic links are stored as links (not followed), when they stay inside the
//!   directory: a relative target that, resolved from the link's directory, names a
//!   path inside the root (following the links on disk, when the target exists). An
//!   absolute target, or one that leaves the root, is refused
//!   ([`ContextError::LinkEscapes`]): make it relative, or copy the file in.
//! - Sockets, FIFOs and device files are refused ([`ContextError::SpecialFile`]).
//! - Names must be UTF-8 ([`ContextError::NonUtf8`]), so that the archive means the
//!   same thing everywhere.
//!
//! [`pack_for_build`] packs a directory as it is (no ignore files: the tree is already
//! the job's source: a git commit's files, an unpacked artifact), plus extra files
//! given in memory (a generated Dockerfile), into an uncompressed tar: what the Engine
//! API's `POST /build` takes as its body.
//!
//! # How it is written (the determinism rules)
//!
//! - Entries sorted by path, component by component (a directory right before its
//!   contents); every directory has an entry (empty ones survive a round trip); the
//!   root itself has none. Paths are relative, `/`-separated, without `./`.
//! - GNU tar headers (long names through GNU long-name entries), mtime
//!   [`FIXED_MTIME`] (2000-01-01T00:00:00Z, not 0: Python's `zipfile` refuses
//!   timestamps before 1980, which breaks `pip install .` of a packed project),
//!   uid/gid 0, no user or group names, modes normalised: directories 0755, files
//!   0755 when any execute bit is set and 0644 otherwise, links 0777.
//! - gzip ([`pack_dir`]) at level [`GZIP_LEVEL`] with no file name, mtime 0 and OS
//!   byte 255 (unknown) in the header, through flate2's pure-Rust backend
//!   (miniz_oxide, pinned by `Cargo.lock`). A golden test pins the digest of a fixed
//!   tree: a change of compressor shows up there. [`Packed::tar_digest`] (of the
//!   uncompressed tar) does not depend on the compressor at all.
//!
//! # Unpacking
//!
//! [`unpack`] takes a `.tar.gz` (or a plain tar) and refuses, naming the entry:
//! absolute paths, `..` components, symbolic links whose target is absolute or leads
//! outside the destination, hard links to anything but a regular file already
//! unpacked, device files and FIFOs, writes through a symbolic link unpacked earlier,
//! more than [`MAX_ENTRIES`] entries, and more than `max_bytes` of file data in total
//! (checked against each header before its data is written). A gzip stream that
//! unpacks to more than [`DEFAULT_MAX_RATIO`] times its compressed size is refused as
//! a decompression bomb while it is read, once it has unpacked to more than
//! [`DEFAULT_RATIO_GRACE_BYTES`] (so small archives of very compressible files are
//! fine); [`unpack_with`] takes other [`Limits`]. Modes are normalised as above (no
//! setuid bits, no odd permissions); owners and times are not restored.
//!
//! [`inspect`] reads an archive the same way without writing anything and lists every
//! entry unpacking would refuse, with its path: the server checks an uploaded code
//! artifact with it before storing it.
//!
//! Unix only (modes, symbolic links).

mod error;
mod pack;
mod unpack;

pub use error::ContextError;
pub use pack::{
    ExtraFile, GZIP_LEVEL, PackOptions, Packed, Progress, pack_dir, pack_for_build,
    pack_for_build_gz,
};
pub use unpack::{
    DEFAULT_MAX_RATIO, DEFAULT_RATIO_GRACE_BYTES, Inspected, Limits, MAX_ENTRIES, Unpacked,
    inspect, unpack, unpack_with,
};

/// The mtime of every entry: 2000-01-01T00:00:00Z.
pub const FIXED_MTIME: u64 = 946_684_800;

/// Formats a byte count for people (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `sha256:<64 hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }

    #[test]
    fn digest_format() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

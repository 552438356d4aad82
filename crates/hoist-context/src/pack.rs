//! Packing: walk, check, sort, write.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempPath};

use crate::{ContextError, FIXED_MTIME, hex};

/// The gzip level of [`pack_dir`]'s output (part of what makes its digest).
pub const GZIP_LEVEL: u32 = 6;

/// How many of the biggest files a [`ContextError::TooLarge`] lists.
const BIGGEST: usize = 10;
/// Progress is reported at least every this many bytes, and after each file.
const PROGRESS_STEP: u64 = 1 << 20;

/// A progress callback: `(bytes of file data done, total)`.
pub type Progress = Box<dyn Fn(u64, u64) + Send + Sync>;

/// Options of [`pack_dir`] and [`pack_for_build`].
#[derive(Default)]
pub struct PackOptions {
    /// Refuse (with [`ContextError::TooLarge`]) when the files add up to more than
    /// this many bytes (uncompressed). Checked before anything is written.
    pub max_bytes: Option<u64>,
    /// Called as file data is written: `(done, total)` bytes, at least every MiB and
    /// after each file, last with `done == total`.
    pub progress: Option<Progress>,
    /// Where the temporary archive goes; default: the system's temp directory.
    pub temp_dir: Option<PathBuf>,
}

impl std::fmt::Debug for PackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackOptions")
            .field("max_bytes", &self.max_bytes)
            .field("progress", &self.progress.as_ref().map(|_| "Fn"))
            .field("temp_dir", &self.temp_dir)
            .finish()
    }
}

/// A packed context: a temporary file, deleted when this is dropped.
#[derive(Debug)]
pub struct Packed {
    /// The archive (`.tar.gz` from [`pack_dir`], `.tar` from [`pack_for_build`]).
    /// Deleted on drop; `path.persist(…)` keeps it.
    pub path: TempPath,
    /// `sha256:<64 hex>` of the file at `path`, as written.
    pub digest: String,
    /// `sha256:<64 hex>` of the uncompressed tar (equal to `digest` for
    /// [`pack_for_build`]); independent of the compressor.
    pub tar_digest: String,
    /// Regular files in the archive (directories and links not counted).
    pub files: u64,
    /// Bytes of file data (uncompressed).
    pub bytes: u64,
    /// Size of the file at `path`.
    pub compressed: u64,
}

/// A file given in memory to [`pack_for_build`] (a generated Dockerfile).
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// A plain file name at the root of the context (no `/`); replaces a file of the
    /// same name in the directory.
    pub name: String,
    pub contents: Vec<u8>,
    pub executable: bool,
}

/// Packs `root` into a deterministic `.tar.gz` (see the crate documentation for what
/// is included and how it is written).
pub fn pack_dir(root: &Path, opts: &PackOptions) -> Result<Packed, ContextError> {
    let entries = collect(root, true)?;
    write(entries, opts, true)
}

/// Packs `dir` as it is (no ignore files; `.git` left out) plus `extra` files into a
/// deterministic uncompressed tar: the body of a Docker Engine API build.
pub fn pack_for_build(
    dir: &Path,
    extra: &[ExtraFile],
    opts: &PackOptions,
) -> Result<Packed, ContextError> {
    write(build_entries(dir, extra)?, opts, false)
}

/// [`pack_for_build`]'s tar, gzip-compressed (deterministically): the context an
/// in-cluster builder (kaniko, buildah) fetches from an object store. Its
/// [`Packed::tar_digest`] is [`pack_for_build`]'s digest for the same input.
pub fn pack_for_build_gz(
    dir: &Path,
    extra: &[ExtraFile],
    opts: &PackOptions,
) -> Result<Packed, ContextError> {
    write(build_entries(dir, extra)?, opts, true)
}

/// What [`pack_for_build`] packs: `dir`'s entries with `extra` put in (replacing a file
/// of the same name).
fn build_entries(dir: &Path, extra: &[ExtraFile]) -> Result<Vec<Item>, ContextError> {
    let mut entries = collect(dir, false)?;
    for x in extra {
        check_extra_name(&x.name)?;
        let item = Item {
            rel: x.name.clone(),
            kind: Kind::Memory {
                contents: x.contents.clone(),
                executable: x.executable,
            },
        };
        match entries.binary_search_by(|e| path_cmp(&e.rel, &x.name)) {
            Ok(i) => {
                if matches!(entries[i].kind, Kind::Dir) {
                    return Err(ContextError::InvalidPath {
                        path: x.name.clone(),
                        message: "a directory of that name exists in the context".into(),
                    });
                }
                entries[i] = item;
            }
            Err(i) => entries.insert(i, item),
        }
    }
    Ok(entries)
}

fn check_extra_name(name: &str) -> Result<(), ContextError> {
    let bad = |message: &str| ContextError::InvalidPath {
        path: name.to_string(),
        message: message.to_string(),
    };
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('/') => Ok(()),
        _ => Err(bad("expected a plain file name at the root of the context")),
    }
}

enum Kind {
    Dir,
    File {
        abs: PathBuf,
        size: u64,
        executable: bool,
    },
    Symlink {
        target: String,
    },
    Memory {
        contents: Vec<u8>,
        executable: bool,
    },
}

struct Item {
    /// Relative, `/`-separated.
    rel: String,
    kind: Kind,
}

impl Item {
    fn size(&self) -> u64 {
        match &self.kind {
            Kind::File { size, .. } => *size,
            Kind::Memory { contents, .. } => contents.len() as u64,
            Kind::Dir | Kind::Symlink { .. } => 0,
        }
    }
}

/// Component-wise comparison of two relative `/`-separated paths (a directory sorts
/// right before its contents).
fn path_cmp(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

fn special_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// Walks `root`; the entries sorted.
fn collect(root: &Path, use_ignore_files: bool) -> Result<Vec<Item>, ContextError> {
    let meta = std::fs::metadata(root).map_err(|e| ContextError::io(root, e))?;
    if !meta.is_dir() {
        return Err(ContextError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let root = std::fs::canonicalize(root).map_err(|e| ContextError::io(root, e))?;
    let mut walk = ignore::WalkBuilder::new(&root);
    walk.standard_filters(false)
        .hidden(false)
        .parents(false)
        .follow_links(false)
        .git_ignore(use_ignore_files)
        .require_git(false)
        .filter_entry(|e| e.file_name() != ".git");
    if use_ignore_files {
        walk.add_custom_ignore_filename(".hoistignore");
    }
    let mut items = Vec::new();
    for ent in walk.build() {
        let ent = ent.map_err(|e| walk_error(&root, e))?;
        if ent.depth() == 0 {
            continue;
        }
        let abs = ent.path().to_path_buf();
        let rel_path = abs.strip_prefix(&root).expect("walk stays under its root");
        let rel = rel_path
            .to_str()
            .ok_or_else(|| ContextError::NonUtf8 { path: abs.clone() })?
            .to_string();
        let ft = ent.file_type().ok_or_else(|| ContextError::Corrupt {
            message: format!("{rel}: no file type"),
        })?;
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            let m = std::fs::symlink_metadata(&abs).map_err(|e| ContextError::io(&abs, e))?;
            Kind::File {
                size: m.len(),
                executable: m.permissions().mode() & 0o111 != 0,
                abs,
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&abs).map_err(|e| ContextError::io(&abs, e))?;
            let target = target
                .to_str()
                .ok_or_else(|| ContextError::NonUtf8 { path: abs.clone() })?
                .to_string();
            check_link(&root, &abs, &rel, &target)?;
            Kind::Symlink { target }
        } else {
            return Err(ContextError::SpecialFile {
                path: rel,
                kind: special_kind(&ft),
            });
        };
        items.push(Item { rel, kind });
    }
    items.sort_by(|a, b| path_cmp(&a.rel, &b.rel));
    Ok(items)
}

fn walk_error(root: &Path, e: ignore::Error) -> ContextError {
    // Keep the path the walker names, when it names one.
    fn find(e: &ignore::Error) -> Option<(PathBuf, String)> {
        match e {
            ignore::Error::WithPath { path, err } => Some((path.clone(), err.to_string())),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                find(err)
            }
            _ => None,
        }
    }
    match find(&e) {
        Some((path, msg)) => ContextError::Io {
            path,
            source: io::Error::other(msg),
        },
        None => ContextError::Io {
            path: root.to_path_buf(),
            source: io::Error::other(e.to_string()),
        },
    }
}

/// A link stays inside when its target is relative, does not climb above the root
/// (read as written), and — when it exists — resolves (following links on disk) to a
/// path under the root.
fn check_link(root: &Path, abs: &Path, rel: &str, target: &str) -> Result<(), ContextError> {
    let escapes = || ContextError::LinkEscapes {
        path: rel.to_string(),
        target: target.to_string(),
    };
    if !link_stays_inside(rel, target) {
        return Err(escapes());
    }
    if let Ok(real) = std::fs::canonicalize(abs)
        && !real.starts_with(root)
    {
        return Err(escapes());
    }
    Ok(())
}

/// Whether a link at `rel` (relative path) with `target` stays inside the root when
/// read lexically.
pub(crate) fn link_stays_inside(rel: &str, target: &str) -> bool {
    let mut depth: usize = Path::new(rel)
        .parent()
        .map(|p| {
            p.components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count()
        })
        .unwrap_or(0);
    if target.is_empty() {
        return false;
    }
    for c in Path::new(target).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Counts and hashes what passes through.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex(&self.hasher.finalize())),
            self.count,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly `remaining` bytes of a file, reporting progress; fewer is an error.
struct FileReader<'a> {
    file: File,
    remaining: u64,
    done: &'a mut u64,
    reported: &'a mut u64,
    total: u64,
    progress: Option<&'a Progress>,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        self.remaining -= n as u64;
        *self.done += n as u64;
        if let Some(p) = self.progress
            && *self.done - *self.reported >= PROGRESS_STEP
        {
            *self.reported = *self.done;
            p(*self.done, self.total);
        }
        Ok(n)
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(FIXED_MTIME);
    h
}

fn file_mode(executable: bool) -> u32 {
    if executable { 0o755 } else { 0o644 }
}

fn write(items: Vec<Item>, opts: &PackOptions, gzip: bool) -> Result<Packed, ContextError> {
    let total: u64 = items.iter().map(Item::size).sum();
    if let Some(limit) = opts.max_bytes
        && total > limit
    {
        return Err(too_large(&items, limit, total));
    }
    let tmp = match &opts.temp_dir {
        Some(d) => NamedTempFile::new_in(d).map_err(|e| ContextError::io(d, e))?,
        None => NamedTempFile::new().map_err(|e| ContextError::io(std::env::temp_dir(), e))?,
    };
    let tmp_path = tmp.path().to_path_buf();
    let io_tmp = |e: io::Error| ContextError::io(&tmp_path, e);
    let file = tmp.as_file().try_clone().map_err(io_tmp)?;
    let outer = HashWriter::new(BufWriter::with_capacity(256 << 10, file));

    let mut done = 0u64;
    let mut reported = 0u64;
    let mut files = 0u64;
    let progress = opts.progress.as_ref();
    if let Some(p) = progress {
        p(0, total);
    }

    // The tar is written into `inner`; for gzip, `inner` wraps the encoder.
    enum Sink<W: Write> {
        Plain(HashWriter<W>),
        Gzip(Box<HashWriter<flate2::write::GzEncoder<HashWriter<W>>>>),
    }
    impl<W: Write> Write for Sink<W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self {
                Sink::Plain(w) => w.write(buf),
                Sink::Gzip(w) => w.write(buf),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            match self {
                Sink::Plain(w) => w.flush(),
                Sink::Gzip(w) => w.flush(),
            }
        }
    }
    let sink = if gzip {
        let enc = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(outer, Compression::new(GZIP_LEVEL));
        Sink::Gzip(Box::new(HashWriter::new(enc)))
    } else {
        Sink::Plain(outer)
    };
    let mut tar = tar::Builder::new(sink);

    for item in &items {
        let rel = item.rel.as_str();
        match &item.kind {
            Kind::Dir => {
                let mut h = header(tar::EntryType::Directory, 0, 0o755);
                tar.append_data(&mut h, rel, io::empty()).map_err(io_tmp)?;
            }
            Kind::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                tar.append_link(&mut h, rel, target).map_err(io_tmp)?;
            }
            Kind::Memory {
                contents,
                executable,
            } => {
                let mut h = header(
                    tar::EntryType::Regular,
                    contents.len() as u64,
                    file_mode(*executable),
                );
                tar.append_data(&mut h, rel, contents.as_slice())
                    .map_err(io_tmp)?;
                done += contents.len() as u64;
                files += 1;
            }
            Kind::File {
                abs,
                size,
                executable,
            } => {
                let changed = || ContextError::Changed {
                    path: rel.to_string(),
                };
                let f = File::open(abs).map_err(|e| ContextError::io(abs, e))?;
                let m = f.metadata().map_err(|e| ContextError::io(abs, e))?;
                if !m.is_file() || m.len() != *size {
                    return Err(changed());
                }
                let mut h = header(tar::EntryType::Regular, *size, file_mode(*executable));
                let mut reader = FileReader {
                    file: f,
                    remaining: *size,
                    done: &mut done,
                    reported: &mut reported,
                    total,
                    progress,
                };
                match tar.append_data(&mut h, rel, &mut reader) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(changed()),
                    Err(e) => {
                        // A read error names the file; a write error the archive.
                        return Err(ContextError::io(abs, e));
                    }
                }
                // Grown since it was measured: the archive would hold a prefix.
                let mut probe = [0u8; 1];
                if reader
                    .file
                    .read(&mut probe)
                    .map_err(|e| ContextError::io(abs, e))?
                    != 0
                {
                    return Err(changed());
                }
                files += 1;
                if let Some(p) = progress {
                    reported = done;
                    p(done, total);
                }
            }
        }
    }
    let sink = tar.into_inner().map_err(io_tmp)?;
    let (mut buf, digest, tar_digest, compressed) = match sink {
        Sink::Plain(w) => {
            let (buf, d, n) = w.finish();
            (buf, d.clone(), d, n)
        }
        Sink::Gzip(w) => {
            let (enc, tar_digest, _) = (*w).finish();
            let (buf, d, n) = enc.finish().map_err(io_tmp)?.finish();
            (buf, d, tar_digest, n)
        }
    };
    buf.flush().map_err(io_tmp)?;
    drop(buf);
    if let Some(p) = progress
        && reported != done
    {
        p(done, total);
    }
    Ok(Packed {
        path: tmp.into_temp_path(),
        digest,
        tar_digest,
        files,
        bytes: done,
        compressed,
    })
}

fn too_large(items: &[Item], limit: u64, total: u64) -> ContextError {
    let mut sizes: Vec<(String, u64)> = items
        .iter()
        .filter(|i| i.size() > 0)
        .map(|i| (i.rel.clone(), i.size()))
        .collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sizes.truncate(BIGGEST);
    ContextError::TooLarge {
        limit,
        total,
        biggest: sizes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_directories_before_their_contents() {
        let mut v = vec!["a.txt", "a/b", "a", "a-b", "b"];
        v.sort_by(|a, b| path_cmp(a, b));
        assert_eq!(v, ["a", "a/b", "a-b", "a.txt", "b"]);
    }

    #[test]
    fn lexical_link_checks() {
        assert!(link_stays_inside("a", "b"));
        assert!(link_stays_inside("d/a", "../b"));
        assert!(link_stays_inside("d/a", "./x/../../b"));
        assert!(!link_stays_inside("a", "../b"));
        assert!(!link_stays_inside("d/a", "../../b"));
        assert!(!link_stays_inside("a", "/etc/passwd"));
        assert!(!link_stays_inside("a", ""));
    }

    #[test]
    fn extra_names_are_plain() {
        assert!(check_extra_name("Dockerfile").is_ok());
        assert!(check_extra_name(".hoist.Dockerfile").is_ok());
        assert!(check_extra_name("a/b").is_err());
        assert!(check_extra_name("../x").is_err());
        assert!(check_extra_name("/x").is_err());
        assert!(check_extra_name(".").is_err());
        assert!(check_extra_name("").is_err());
    }
}

//! Unpacking (and inspecting) an archive that may come from anywhere.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use crate::ContextError;
use crate::pack::link_stays_inside;

/// The most entries [`unpack`] accepts by default (an inode-exhaustion guard).
pub const MAX_ENTRIES: u64 = 1_000_000;
/// The default [`Limits::max_ratio`]: a gzipped archive may unpack to at most 100
/// times its size…
pub const DEFAULT_MAX_RATIO: u64 = 100;
/// …once it has unpacked to more than this ([`Limits::ratio_grace_bytes`]): small
/// archives of very compressible files are never refused for their ratio.
pub const DEFAULT_RATIO_GRACE_BYTES: u64 = 32 << 20;
/// The most problems [`inspect`] lists before it stops reading.
const MAX_PROBLEMS: usize = 100;

/// What [`unpack_with`] and [`inspect`] accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of file data in all (`None`: no cap). Checked against each entry's
    /// header before its data is read.
    pub max_bytes: Option<u64>,
    /// Most bytes of tar stream per byte of gzip stream (`None`: no check): the guard
    /// against decompression bombs (a few MB that unpack to many GB). Checked as the
    /// stream is read, once [`Limits::ratio_grace_bytes`] were unpacked.
    pub max_ratio: Option<u64>,
    /// Unpacked bytes below which the ratio is not checked.
    pub ratio_grace_bytes: u64,
    /// Most entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: None,
            max_ratio: Some(DEFAULT_MAX_RATIO),
            ratio_grace_bytes: DEFAULT_RATIO_GRACE_BYTES,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// What [`unpack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files (hard links included).
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Counts the bytes read from the packed input.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Fails the read (and records why) once the unpacked stream outgrows the packed one
/// by more than the allowed ratio.
struct RatioGuard<R> {
    inner: R,
    packed: Rc<Cell<u64>>,
    unpacked: u64,
    max_ratio: u64,
    grace: u64,
    tripped: Rc<Cell<Option<(u64, u64)>>>,
}

impl<R: Read> Read for RatioGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.unpacked += n as u64;
        let packed = self.packed.get();
        if self.unpacked > self.grace && self.unpacked > self.max_ratio.saturating_mul(packed) {
            self.tripped.set(Some((self.unpacked, packed)));
            return Err(io::Error::other("compression ratio over the limit"));
        }
        Ok(n)
    }
}

/// The tar stream of a `.tar.gz` (or of a plain tar: detected by the gzip magic), with
/// the ratio guard when gzipped. The cell holds `(unpacked, packed)` once the guard
/// tripped.
#[allow(clippy::type_complexity)]
fn open<'a>(
    input: impl Read + 'a,
    limits: &Limits,
) -> Result<(Box<dyn Read + 'a>, Rc<Cell<Option<(u64, u64)>>>), ContextError> {
    let packed = Rc::new(Cell::new(0));
    let counted = Counted {
        inner: input,
        count: packed.clone(),
    };
    let mut input = BufReader::with_capacity(64 << 10, counted);
    let head = input.fill_buf().map_err(|e| ContextError::Corrupt {
        message: e.to_string(),
    })?;
    let tripped = Rc::new(Cell::new(None));
    let reader: Box<dyn Read + 'a> = if head.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::bufread::GzDecoder::new(input);
        match limits.max_ratio {
            Some(max_ratio) => Box::new(RatioGuard {
                inner: gz,
                packed,
                unpacked: 0,
                max_ratio,
                grace: limits.ratio_grace_bytes,
                tripped: tripped.clone(),
            }),
            None => Box::new(gz),
        }
    } else {
        Box::new(input)
    };
    Ok((reader, tripped))
}

/// The error to report: the ratio guard's when it tripped (the tar reader only saw a
/// failed read).
fn settle<T>(
    r: Result<T, ContextError>,
    tripped: &Cell<Option<(u64, u64)>>,
    limits: &Limits,
) -> Result<T, ContextError> {
    match (r, tripped.get()) {
        (Err(_), Some((unpacked, packed))) => Err(ContextError::CompressionRatio {
            unpacked,
            packed,
            max_ratio: limits.max_ratio.unwrap_or_default(),
        }),
        (r, _) => r,
    }
}

fn corrupt(e: io::Error) -> ContextError {
    ContextError::Corrupt {
        message: e.to_string(),
    }
}

/// Unpacks a `.tar.gz` (or plain `.tar`: detected by the gzip magic) into `dest`
/// (created if missing), refusing anything that would write outside `dest`, more than
/// `max_bytes` of file data, or a gzip stream that unpacks to more than
/// [`DEFAULT_MAX_RATIO`] times its size (past [`DEFAULT_RATIO_GRACE_BYTES`]). See the
/// crate documentation for the rules, and [`unpack_with`] for other limits.
///
/// On error, what was unpacked so far stays in `dest`: unpack into a fresh temporary
/// directory and drop it on failure.
pub fn unpack(
    tar_gz: impl Read,
    dest: &Path,
    max_bytes: Option<u64>,
) -> Result<Unpacked, ContextError> {
    let limits = Limits {
        max_bytes,
        ..Limits::default()
    };
    unpack_with(tar_gz, dest, &limits)
}

/// [`unpack`] with the given limits.
pub fn unpack_with(
    tar_gz: impl Read,
    dest: &Path,
    limits: &Limits,
) -> Result<Unpacked, ContextError> {
    let (reader, tripped) = open(tar_gz, limits)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dest)
        .map_err(|e| ContextError::io(dest, e))?;
    let dest = fs::canonicalize(dest).map_err(|e| ContextError::io(dest, e))?;
    if !fs::metadata(&dest)
        .map_err(|e| ContextError::io(&dest, e))?
        .is_dir()
    {
        return Err(ContextError::NotADirectory { path: dest });
    }
    let r = unpack_entries(tar::Archive::new(reader), &dest, limits);
    settle(r, &tripped, limits)
}

fn unpack_entries(
    mut archive: tar::Archive<Box<dyn Read + '_>>,
    dest: &Path,
    limits: &Limits,
) -> Result<Unpacked, ContextError> {
    let mut out = Unpacked::default();
    let mut count = 0u64;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let Some((raw_path, shown, kind)) = entry_head(&entry, &mut count, limits)? else {
            continue;
        };
        let Some(rel) = safe_relative(&raw_path, &shown)? else {
            // "." or "./": the destination itself.
            continue;
        };
        let target = dest.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                make_parents(dest, &rel, &shown)?;
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(ContextError::Conflict {
                            path: shown,
                            message: "a directory entry where a file or link was unpacked".into(),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::DirBuilder::new()
                            .mode(0o755)
                            .create(&target)
                            .map_err(|e| ContextError::io(&target, e))?;
                    }
                    Err(e) => return Err(ContextError::io(&target, e)),
                }
                out.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(corrupt)?;
                if let Some(limit) = limits.max_bytes
                    && out.bytes.saturating_add(size) > limit
                {
                    return Err(ContextError::TooLarge {
                        limit,
                        total: out.bytes.saturating_add(size),
                        biggest: vec![(shown, size)],
                    });
                }
                make_parents(dest, &rel, &shown)?;
                clear_for_file(&target, &shown)?;
                let executable = entry.header().mode().map_err(corrupt)? & 0o111 != 0;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .open(&target)
                    .map_err(|e| ContextError::io(&target, e))?;
                let n = io::copy(&mut (&mut entry).take(size), &mut f).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        || e.kind() == io::ErrorKind::InvalidData
                        || e.kind() == io::ErrorKind::InvalidInput
                    {
                        corrupt(e)
                    } else {
                        ContextError::io(&target, e)
                    }
                })?;
                if n != size {
                    return Err(ContextError::Corrupt {
                        message: format!("{shown}: truncated ({n} of {size} bytes)"),
                    });
                }
                out.bytes += n;
                out.files += 1;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| ContextError::Corrupt {
                        message: format!("{shown}: symbolic link without a target"),
                    })?
                    .into_owned();
                let link_str = link.to_string_lossy().into_owned();
                let rel_str = rel.to_string_lossy();
                if !link_stays_inside(&rel_str, &link_str) {
                    return Err(ContextError::LinkEscapes {
                        path: shown,
                        target: link_str,
                    });
                }
                make_parents(dest, &rel, &shown)?;
                clear_for_file(&target, &shown)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| ContextError::io(&target, e))?;
                out.symlinks += 1;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| ContextError::Corrupt {
                        message: format!("{shown}: hard link without a target"),
                    })?
                    .into_owned();
                let link_shown = link.to_string_lossy().into_owned();
                let Some(link_rel) = safe_relative(&link, &link_shown)? else {
                    return Err(ContextError::Unsupported {
                        path: shown,
                        message: "hard link to the archive's root".into(),
                    });
                };
                check_no_links_above(dest, &link_rel, &link_shown)?;
                let source = dest.join(&link_rel);
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(ContextError::Unsupported {
                            path: shown,
                            message: format!(
                                "hard link to {link_shown}, which is not a regular file unpacked before it"
                            ),
                        });
                    }
                }
                make_parents(dest, &rel, &shown)?;
                clear_for_file(&target, &shown)?;
                fs::hard_link(&source, &target).map_err(|e| ContextError::io(&target, e))?;
                out.files += 1;
            }
            tar::EntryType::Char => return Err(special(shown, "a character device")),
            tar::EntryType::Block => return Err(special(shown, "a block device")),
            tar::EntryType::Fifo => return Err(special(shown, "a FIFO")),
            other => {
                return Err(ContextError::Unsupported {
                    path: shown,
                    message: format!("unsupported archive entry type {other:?}"),
                });
            }
        }
    }
    Ok(out)
}

/// What [`inspect`] found in a safe archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspected {
    /// Regular files (hard links included).
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file data.
    pub bytes: u64,
}

/// Reads a `.tar.gz` (or plain tar) as [`unpack_with`] would unpack it, without writing
/// anything: the same limits (size, compression ratio, entries) end the reading with
/// their error; entries [`unpack`] would refuse (absolute paths, `..`, links out of
/// the archive, writes through a link, hard links to anything but a regular file
/// before them, devices, FIFOs, unsupported kinds) are all listed in one
/// [`ContextError::Unsafe`] (up to 100 of them).
pub fn inspect(tar_gz: impl Read, limits: &Limits) -> Result<Inspected, ContextError> {
    let (reader, tripped) = open(tar_gz, limits)?;
    let r = inspect_entries(tar::Archive::new(reader), limits);
    settle(r, &tripped, limits)
}

fn inspect_entries(
    mut archive: tar::Archive<Box<dyn Read + '_>>,
    limits: &Limits,
) -> Result<Inspected, ContextError> {
    let mut out = Inspected::default();
    let mut problems: Vec<ContextError> = Vec::new();
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut links: HashSet<PathBuf> = HashSet::new();
    let mut count = 0u64;
    for entry in archive.entries().map_err(corrupt)? {
        if problems.len() >= MAX_PROBLEMS {
            break;
        }
        let entry = entry.map_err(corrupt)?;
        let Some((raw_path, shown, kind)) = entry_head(&entry, &mut count, limits)? else {
            continue;
        };
        let rel = match safe_relative(&raw_path, &shown) {
            Ok(Some(rel)) => rel,
            Ok(None) => continue,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if let Some(link) = rel.ancestors().skip(1).find(|a| links.contains(*a)) {
            problems.push(ContextError::ThroughLink {
                path: shown,
                link: link.to_string_lossy().into_owned(),
            });
            continue;
        }
        match kind {
            tar::EntryType::Directory => {
                out.dirs += 1;
                files.remove(&rel);
                links.remove(&rel);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(corrupt)?;
                if let Some(limit) = limits.max_bytes
                    && out.bytes.saturating_add(size) > limit
                {
                    return Err(ContextError::TooLarge {
                        limit,
                        total: out.bytes.saturating_add(size),
                        biggest: vec![(shown, size)],
                    });
                }
                out.bytes += size;
                out.files += 1;
                links.remove(&rel);
                files.insert(rel);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(corrupt)?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if link_stays_inside(&rel.to_string_lossy(), &target) {
                    out.symlinks += 1;
                    files.remove(&rel);
                    links.insert(rel);
                } else {
                    problems.push(ContextError::LinkEscapes {
                        path: shown,
                        target,
                    });
                }
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(corrupt)?
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let target_shown = target.to_string_lossy().into_owned();
                match safe_relative(&target, &target_shown) {
                    Err(e) => problems.push(e),
                    Ok(Some(t)) if files.contains(&t) => {
                        out.files += 1;
                        links.remove(&rel);
                        files.insert(rel);
                    }
                    Ok(_) => problems.push(ContextError::Unsupported {
                        path: shown,
                        message: format!(
                            "hard link to {target_shown}, which is not a regular file unpacked before it"
                        ),
                    }),
                }
            }
            tar::EntryType::Char => problems.push(special(shown, "a character device")),
            tar::EntryType::Block => problems.push(special(shown, "a block device")),
            tar::EntryType::Fifo => problems.push(special(shown, "a FIFO")),
            other => problems.push(ContextError::Unsupported {
                path: shown,
                message: format!("unsupported archive entry type {other:?}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ContextError::Unsafe { problems })
    }
}

fn special(path: String, kind: &'static str) -> ContextError {
    ContextError::SpecialFile { path, kind }
}

/// An entry's path (as stored, and as shown in messages) and kind, after counting it
/// against the entry limit; `None` for pax headers, which carry no file.
fn entry_head<R: Read>(
    entry: &tar::Entry<'_, R>,
    count: &mut u64,
    limits: &Limits,
) -> Result<Option<(PathBuf, String, tar::EntryType)>, ContextError> {
    *count += 1;
    if *count > limits.max_entries {
        return Err(ContextError::TooManyEntries {
            limit: limits.max_entries,
        });
    }
    let raw_path = entry.path().map_err(corrupt)?.into_owned();
    let shown = raw_path.to_string_lossy().into_owned();
    let kind = entry.header().entry_type();
    if matches!(
        kind,
        tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
    ) {
        return Ok(None);
    }
    Ok(Some((raw_path, shown, kind)))
}

/// The entry's path as plain relative components; `None` for the root itself.
fn safe_relative(p: &Path, shown: &str) -> Result<Option<PathBuf>, ContextError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ContextError::ParentDir {
                    path: shown.to_string(),
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ContextError::AbsolutePath {
                    path: shown.to_string(),
                });
            }
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Creates the directories above `rel` inside `dest`, refusing to go through a
/// symbolic link or a file.
fn make_parents(dest: &Path, rel: &Path, shown: &str) -> Result<(), ContextError> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut cur = dest.to_path_buf();
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ContextError::ThroughLink {
                    path: shown.to_string(),
                    link: rel_display(dest, &cur),
                });
            }
            Ok(_) => {
                return Err(ContextError::Conflict {
                    path: shown.to_string(),
                    message: format!("{} is not a directory", rel_display(dest, &cur)),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .map_err(|e| ContextError::io(&cur, e))?;
            }
            Err(e) => return Err(ContextError::io(&cur, e)),
        }
    }
    Ok(())
}

/// Like [`make_parents`] without creating anything: every directory above `rel` must
/// exist and none may be a link.
fn check_no_links_above(dest: &Path, rel: &Path, shown: &str) -> Result<(), ContextError> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut cur = dest.to_path_buf();
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ContextError::ThroughLink {
                    path: shown.to_string(),
                    link: rel_display(dest, &cur),
                });
            }
            _ => {
                return Err(ContextError::Unsupported {
                    path: shown.to_string(),
                    message: "hard link into a directory that was not unpacked".into(),
                });
            }
        }
    }
    Ok(())
}

/// Makes room for a file or link at `target`: an earlier file or link there is
/// replaced (a later entry wins, as with `tar`); a directory is a conflict.
fn clear_for_file(target: &Path, shown: &str) -> Result<(), ContextError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Err(ContextError::Conflict {
            path: shown.to_string(),
            message: "a file entry where a directory was unpacked".into(),
        }),
        Ok(_) => fs::remove_file(target).map_err(|e| ContextError::io(target, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ContextError::io(target, e)),
    }
}

fn rel_display(dest: &Path, p: &Path) -> String {
    p.strip_prefix(dest)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

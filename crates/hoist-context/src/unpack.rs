//! Unpacking an archive that may come from anywhere.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::ContextError;
use crate::pack::link_stays_inside;

/// The most entries [`unpack`] accepts (an inode-exhaustion guard).
pub const MAX_ENTRIES: u64 = 1_000_000;

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

/// Unpacks a `.tar.gz` (or plain `.tar`: detected by the gzip magic) into `dest`
/// (created if missing), refusing anything that would write outside `dest` or more
/// than `max_bytes` of file data. See the crate documentation for the rules.
///
/// On error, what was unpacked so far stays in `dest`: unpack into a fresh temporary
/// directory and drop it on failure.
pub fn unpack(
    tar_gz: impl Read,
    dest: &Path,
    max_bytes: Option<u64>,
) -> Result<Unpacked, ContextError> {
    let mut input = BufReader::with_capacity(256 << 10, tar_gz);
    let head = input.fill_buf().map_err(|e| ContextError::Corrupt {
        message: e.to_string(),
    })?;
    let gzipped = head.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::bufread::GzDecoder::new(input))
    } else {
        Box::new(input)
    };

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

    let mut archive = tar::Archive::new(reader);
    let corrupt = |e: io::Error| ContextError::Corrupt {
        message: e.to_string(),
    };
    let mut out = Unpacked::default();
    let mut count = 0u64;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(ContextError::TooManyEntries { limit: MAX_ENTRIES });
        }
        let raw_path = entry.path().map_err(corrupt)?.into_owned();
        let shown = raw_path.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let Some(rel) = safe_relative(&raw_path, &shown)? else {
            // "." or "./": the destination itself.
            continue;
        };
        let target = dest.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                make_parents(&dest, &rel, &shown)?;
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
                if let Some(limit) = max_bytes
                    && out.bytes.saturating_add(size) > limit
                {
                    return Err(ContextError::TooLarge {
                        limit,
                        total: out.bytes.saturating_add(size),
                        biggest: vec![(shown, size)],
                    });
                }
                make_parents(&dest, &rel, &shown)?;
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
                make_parents(&dest, &rel, &shown)?;
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
                check_no_links_above(&dest, &link_rel, &link_shown)?;
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
                make_parents(&dest, &rel, &shown)?;
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

fn special(path: String, kind: &'static str) -> ContextError {
    ContextError::SpecialFile { path, kind }
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

//! Packing and unpacking real directories: determinism, ignore rules, links, limits,
//! and hostile archives.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::{Arc, Mutex};

use hoist_context::{
    ContextError, ExtraFile, FIXED_MTIME, Limits, PackOptions, inspect, pack_dir, pack_for_build,
    pack_for_build_gz, unpack,
};
use proptest::prelude::*;

fn write(root: &Path, rel: &str, contents: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, contents).unwrap();
}

fn chmod(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

fn digest(root: &Path) -> String {
    pack_dir(root, &PackOptions::default()).unwrap().digest
}

/// The entries of a tar (gzipped or not): path → (type, mode, uid, gid, mtime, size,
/// username, link).
/// (path, type, mode, uid, gid, mtime, size, "user:group:link")
type Listed = (String, char, u32, u64, u64, u64, u64, String);

fn listing(path: &Path) -> Vec<Listed> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut a = tar::Archive::new(reader);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.entry_type().as_byte() as char,
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                h.size().unwrap(),
                format!(
                    "{}:{}:{}",
                    h.username().unwrap().unwrap_or(""),
                    h.groupname().unwrap().unwrap_or(""),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
            )
        })
        .collect()
}

fn sample(root: &Path) {
    write(root, "train.py", b"print('hello')\n");
    write(root, "run.sh", b"#!/bin/sh\necho hi\n");
    chmod(root, "run.sh", 0o755);
    write(root, "pkg/__init__.py", b"");
    write(root, "pkg/model.py", b"x = 1\n");
    fs::create_dir_all(root.join("empty")).unwrap();
    symlink("pkg/model.py", root.join("model-link.py")).unwrap();
}

#[test]
fn same_tree_same_digest_whatever_the_mtimes_and_order() {
    let a = tempfile::tempdir().unwrap();
    sample(a.path());
    let d1 = digest(a.path());
    assert!(d1.starts_with("sha256:") && d1.len() == 7 + 64, "{d1}");
    assert_eq!(digest(a.path()), d1, "pack twice");

    // Touch every mtime, and change a permission that is normalised away.
    let f = fs::File::options()
        .write(true)
        .open(a.path().join("train.py"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
        .unwrap();
    chmod(a.path(), "pkg/model.py", 0o600);
    assert_eq!(
        digest(a.path()),
        d1,
        "mtime and non-exec mode bits are normalised"
    );

    // The same tree created in another order, elsewhere.
    let b = tempfile::tempdir().unwrap();
    fs::create_dir_all(b.path().join("empty")).unwrap();
    symlink("pkg/model.py", b.path().join("model-link.py")).unwrap();
    write(b.path(), "pkg/model.py", b"x = 1\n");
    write(b.path(), "run.sh", b"#!/bin/sh\necho hi\n");
    chmod(b.path(), "run.sh", 0o700);
    write(b.path(), "pkg/__init__.py", b"");
    write(b.path(), "train.py", b"print('hello')\n");
    assert_eq!(
        digest(b.path()),
        d1,
        "another directory, another creation order"
    );

    // One byte changes the digest; so does the execute bit, a rename, an empty dir.
    write(a.path(), "pkg/model.py", b"x = 2\n");
    let d2 = digest(a.path());
    assert_ne!(d2, d1);
    write(a.path(), "pkg/model.py", b"x = 1\n");
    assert_eq!(digest(a.path()), d1, "back to the same content");
    chmod(a.path(), "train.py", 0o755);
    assert_ne!(digest(a.path()), d1, "execute bit");
    chmod(a.path(), "train.py", 0o644);
    fs::create_dir(a.path().join("empty/more")).unwrap();
    assert_ne!(digest(a.path()), d1, "a new empty directory");
}

#[test]
fn golden_digest_pins_the_format() {
    // If this changes, every code artifact and image tag changes: the tar layout, the
    // gzip settings or the compressor changed. Only update it on purpose.
    let a = tempfile::tempdir().unwrap();
    write(a.path(), "a.txt", b"alpha\n");
    write(a.path(), "d/b.txt", b"beta\n");
    chmod(a.path(), "d/b.txt", 0o755);
    symlink("d/b.txt", a.path().join("l")).unwrap();
    let p = pack_dir(a.path(), &PackOptions::default()).unwrap();
    assert_eq!(
        (p.digest.as_str(), p.tar_digest.as_str()),
        (GOLDEN_TGZ, GOLDEN_TAR),
        "golden digests changed"
    );
}

const GOLDEN_TGZ: &str = "sha256:3901447ed4988efd8c220ed898402b0b1ea5761af65c3d6d98b078a3f382f238";
const GOLDEN_TAR: &str = "sha256:57e24773cf2b8976ef0a157d5737f7a13e95bd8284416af6541624a170a944b5";

#[test]
fn archive_layout_is_normalised() {
    let a = tempfile::tempdir().unwrap();
    sample(a.path());
    let long = format!("deep/{}/file.txt", "x".repeat(120));
    write(a.path(), &long, b"long name\n");
    let p = pack_dir(a.path(), &PackOptions::default()).unwrap();
    assert_eq!(p.files, 5);
    assert_eq!(p.bytes, 15 + 18 + 6 + 10);
    assert_eq!(p.compressed, fs::metadata(&p.path).unwrap().len());

    let raw = fs::read(&p.path).unwrap();
    assert_eq!(&raw[..3], &[0x1f, 0x8b, 8], "gzip, deflate");
    assert_eq!(raw[3], 0, "no FNAME / FEXTRA / FCOMMENT flags");
    assert_eq!(&raw[4..8], &[0, 0, 0, 0], "gzip mtime 0");
    assert_eq!(raw[9], 255, "OS unknown");

    let l = listing(&p.path);
    let names: Vec<&str> = l.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "deep",
            &format!("deep/{}", "x".repeat(120)),
            long.as_str(),
            "empty",
            "model-link.py",
            "pkg",
            "pkg/__init__.py",
            "pkg/model.py",
            "run.sh",
            "train.py",
        ]
    );
    for (name, kind, mode, uid, gid, mtime, _, names) in &l {
        assert_eq!((*uid, *gid, *mtime), (0, 0, FIXED_MTIME), "{name}");
        let expected = match (*kind, name.as_str()) {
            ('5', _) => 0o755,
            ('2', _) => 0o777,
            (_, "run.sh") => 0o755,
            _ => 0o644,
        };
        assert_eq!(*mode, expected, "{name}");
        assert!(
            names.starts_with("::"),
            "no user/group names: {name} {names}"
        );
    }
    let link = l.iter().find(|e| e.0 == "model-link.py").unwrap();
    assert_eq!((link.1, link.7.as_str()), ('2', "::pkg/model.py"));
}

#[test]
fn ignore_files_and_git_are_honoured() {
    let a = tempfile::tempdir().unwrap();
    let r = a.path();
    write(r, "train.py", b"1");
    write(r, ".gitignore", b"*.log\ndata/\n!keep.log\n");
    write(r, ".hoistignore", b"secret.txt\n!data/\n");
    write(r, "out.log", b"log");
    write(r, "keep.log", b"keep");
    write(r, "secret.txt", b"s");
    write(r, "data/x.csv", b"1,2");
    write(r, "sub/.gitignore", b"*.tmp\n");
    write(r, "sub/a.tmp", b"t");
    write(r, "sub/a.py", b"a");
    write(r, ".env.example", b"hidden but not ignored");
    write(r, ".git/HEAD", b"ref: refs/heads/main\n");
    write(r, "vendor/lib/.git", b"gitdir: ../../.git/modules/lib\n");
    write(r, "vendor/lib/x.py", b"x");
    let p = pack_dir(r, &PackOptions::default()).unwrap();
    let names: Vec<String> = listing(&p.path).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            ".env.example",
            ".gitignore",
            ".hoistignore",
            "data",
            "data/x.csv",
            "keep.log",
            "sub",
            "sub/.gitignore",
            "sub/a.py",
            "train.py",
            "vendor",
            "vendor/lib",
            "vendor/lib/x.py",
        ]
    );

    // pack_for_build takes the tree as it is (minus .git), plus the extra file.
    let extra = ExtraFile {
        name: ".hoist.Dockerfile".into(),
        contents: b"FROM scratch\n".to_vec(),
        executable: false,
    };
    let b = pack_for_build(r, std::slice::from_ref(&extra), &PackOptions::default()).unwrap();
    assert_eq!(b.digest, b.tar_digest, "plain tar");
    let names: Vec<String> = listing(&b.path).into_iter().map(|e| e.0).collect();
    assert!(names.contains(&"out.log".to_string()));
    assert!(names.contains(&"secret.txt".to_string()));
    assert!(names.contains(&".hoist.Dockerfile".to_string()));
    assert!(
        !names
            .iter()
            .any(|n| n.contains(".git/") || n.ends_with("/.git"))
    );
    assert_eq!(names[0], ".env.example");
    assert_eq!(names[1], ".gitignore");
    assert_eq!(names[2], ".hoist.Dockerfile", "sorted in place");
    // An extra file replaces one of the same name; the result is deterministic.
    write(r, ".hoist.Dockerfile", b"FROM other\n");
    let c = pack_for_build(r, std::slice::from_ref(&extra), &PackOptions::default()).unwrap();
    assert_eq!(c.digest, b.digest);

    // The gzip form (for in-cluster builders) is the same tar: same tar digest, so the
    // same image tag whatever the engine; itself deterministic; it unpacks to the same
    // entries.
    let g = pack_for_build_gz(r, std::slice::from_ref(&extra), &PackOptions::default()).unwrap();
    assert_eq!(g.tar_digest, b.tar_digest);
    assert_ne!(g.digest, g.tar_digest, "compressed");
    assert!(g.compressed < b.compressed);
    let g2 = pack_for_build_gz(r, std::slice::from_ref(&extra), &PackOptions::default()).unwrap();
    assert_eq!(g2.digest, g.digest);
    let gnames: Vec<String> = listing(&g.path).into_iter().map(|e| e.0).collect();
    assert_eq!(gnames, names);
}

#[test]
fn links_inside_are_kept_links_outside_refused() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"s");

    let a = tempfile::tempdir().unwrap();
    let r = a.path();
    write(r, "d/f.txt", b"f");
    symlink("../d/f.txt", r.join("d/self")).unwrap();
    symlink("d", r.join("dirlink")).unwrap();
    symlink("missing", r.join("dangling")).unwrap();
    pack_dir(r, &PackOptions::default()).unwrap();

    for (name, target) in [
        ("up", "../x".to_string()),
        ("abs", outside.path().join("secret").display().to_string()),
        // Lexically inside, but `dot` resolves to the root, so `dot/..` is its parent.
        ("chain", "dot/../outside".to_string()),
    ] {
        let b = tempfile::tempdir().unwrap();
        let r = b.path().join("ctx");
        fs::create_dir(&r).unwrap();
        write(b.path(), "outside", b"o");
        symlink(".", r.join("dot")).unwrap();
        symlink(&target, r.join(name)).unwrap();
        match pack_dir(&r, &PackOptions::default()) {
            Err(ContextError::LinkEscapes { path, target: t }) => {
                assert_eq!(path, name);
                assert_eq!(t, target);
                let msg = ContextError::LinkEscapes { path, target: t }.to_string();
                assert!(msg.contains(name) && msg.contains("outside"), "{msg}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn special_files_are_refused() {
    let a = tempfile::tempdir().unwrap();
    write(a.path(), "ok.txt", b"1");
    let st = std::process::Command::new("mkfifo")
        .arg(a.path().join("pipe"))
        .status()
        .unwrap();
    assert!(st.success());
    let e = pack_dir(a.path(), &PackOptions::default()).unwrap_err();
    assert!(
        matches!(&e, ContextError::SpecialFile { path, kind } if path == "pipe" && *kind == "a FIFO"),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("pipe: a FIFO"), "{e}");

    // Ignored, it is fine.
    write(a.path(), ".hoistignore", b"pipe\n");
    pack_dir(a.path(), &PackOptions::default()).unwrap();
}

#[test]
fn over_the_limit_names_the_biggest_files() {
    let a = tempfile::tempdir().unwrap();
    write(a.path(), "small.txt", &[1; 10]);
    write(a.path(), "data/big.bin", &[2; 5000]);
    write(a.path(), "mid.bin", &[3; 900]);
    let opts = PackOptions {
        max_bytes: Some(4096),
        ..Default::default()
    };
    match pack_dir(a.path(), &opts) {
        Err(ContextError::TooLarge {
            limit,
            total,
            biggest,
        }) => {
            assert_eq!((limit, total), (4096, 5910));
            assert_eq!(biggest[0], ("data/big.bin".to_string(), 5000));
            assert_eq!(biggest[1], ("mid.bin".to_string(), 900));
        }
        other => panic!("{other:?}"),
    }
    let ok = PackOptions {
        max_bytes: Some(5910),
        ..Default::default()
    };
    assert_eq!(pack_dir(a.path(), &ok).unwrap().bytes, 5910);
}

#[test]
fn progress_is_reported_to_the_end() {
    let a = tempfile::tempdir().unwrap();
    write(a.path(), "a.bin", &vec![7u8; 3 << 20]);
    write(a.path(), "b.txt", b"hello");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let opts = PackOptions {
        progress: Some(Box::new(move |d, t| s.lock().unwrap().push((d, t)))),
        ..Default::default()
    };
    let p = pack_dir(a.path(), &opts).unwrap();
    let seen = seen.lock().unwrap();
    let total = (3 << 20) + 5;
    assert_eq!(seen.first(), Some(&(0, total)));
    assert_eq!(seen.last(), Some(&(total, total)));
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(p.bytes, total);
}

#[test]
fn temp_file_is_deleted_on_drop() {
    let a = tempfile::tempdir().unwrap();
    write(a.path(), "a", b"a");
    let tmp = tempfile::tempdir().unwrap();
    let opts = PackOptions {
        temp_dir: Some(tmp.path().to_path_buf()),
        ..Default::default()
    };
    let p = pack_dir(a.path(), &opts).unwrap();
    assert!(p.path.starts_with(tmp.path()));
    assert!(p.path.exists());
    drop(p);
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn not_a_directory() {
    let a = tempfile::tempdir().unwrap();
    write(a.path(), "f", b"x");
    let e = pack_dir(&a.path().join("f"), &PackOptions::default()).unwrap_err();
    assert!(matches!(e, ContextError::NotADirectory { .. }), "{e:?}");
    let e = pack_dir(&a.path().join("missing"), &PackOptions::default()).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

// ------------------------------------------------------------------------ unpacking

/// A raw tar entry, bypassing the tar crate's own path checks.
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        raw_entry(&mut out, name, *kind, link, data);
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn unpack_refuses_hostile_archives() {
    use tar::EntryType::*;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute",
            raw_tar(&[("/etc/evil", Regular, "", b"x")]),
            "/etc/evil: absolute path",
        ),
        (
            "dotdot",
            raw_tar(&[("a/../../evil", Regular, "", b"x")]),
            "a/../../evil: `..`",
        ),
        (
            "link out",
            raw_tar(&[("l", Symlink, "../../etc", b"")]),
            "l: symbolic link to \"../../etc\" points outside",
        ),
        (
            "absolute link",
            raw_tar(&[("l", Symlink, "/etc", b"")]),
            "points outside",
        ),
        (
            "through link",
            raw_tar(&[
                ("d", Directory, "", b""),
                ("l", Symlink, "d", b""),
                ("l/f", Regular, "", b"x"),
            ]),
            "l/f: would be written through the symbolic link l",
        ),
        (
            "device",
            raw_tar(&[("dev", Char, "", b"")]),
            "dev: a character device",
        ),
        ("fifo", raw_tar(&[("p", Fifo, "", b"")]), "p: a FIFO"),
        (
            "hard link out",
            raw_tar(&[("h", Link, "../../etc/passwd", b"")]),
            "../../etc/passwd: `..`",
        ),
        (
            "hard link to nothing",
            raw_tar(&[("h", Link, "nothing", b"")]),
            "h: hard link to nothing",
        ),
        (
            "bomb",
            raw_tar(&[("a", Regular, "", &[0; 600]), ("b", Regular, "", &[0; 600])]),
            "over the limit of 1000 B",
        ),
        (
            "garbage",
            b"this is not a tar archive at all".repeat(20),
            "invalid archive",
        ),
    ];
    let limits = Limits {
        max_bytes: Some(1000),
        ..Limits::default()
    };
    for (name, tar, expected) in cases {
        for bytes in [tar.clone(), gz(&tar)] {
            let dest = tempfile::tempdir().unwrap();
            let e = unpack(&bytes[..], &dest.path().join("out"), Some(1000)).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(expected), "{name}: {msg}");
            // Nothing was written outside the destination.
            assert!(!dest.path().join("evil").exists(), "{name}");
            // Inspecting refuses the same, writing nothing.
            let e = inspect(&bytes[..], &limits).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(expected), "inspect {name}: {msg}");
        }
    }
}

#[test]
fn inspect_lists_every_unsafe_entry() {
    use tar::EntryType::*;
    let tar = raw_tar(&[
        ("ok.txt", Regular, "", b"fine"),
        ("/etc/cron.d/x", Regular, "", b"x"),
        ("d/../../x", Regular, "", b"x"),
        ("l", Symlink, "/", b""),
        ("null", Char, "", b""),
        ("in", Symlink, "ok.txt", b""),
        ("hard", Link, "ok.txt", b""),
    ]);
    let e = inspect(&gz(&tar)[..], &Limits::default()).unwrap_err();
    let ContextError::Unsafe { problems } = &e else {
        panic!("{e:?}")
    };
    let entries: Vec<Option<&str>> = problems.iter().map(ContextError::entry).collect();
    assert_eq!(
        entries,
        [
            Some("/etc/cron.d/x"),
            Some("d/../../x"),
            Some("l"),
            Some("null")
        ]
    );
    assert!(
        e.to_string()
            .starts_with("the archive has 4 unsafe entries: "),
        "{e}"
    );
    // The benign part alone passes, and nothing was written anywhere.
    let ok = raw_tar(&[
        ("ok.txt", Regular, "", b"fine"),
        ("in", Symlink, "ok.txt", b""),
        ("hard", Link, "ok.txt", b""),
    ]);
    let i = inspect(&gz(&ok)[..], &Limits::default()).unwrap();
    assert_eq!(
        i,
        hoist_context::Inspected {
            files: 2,
            dirs: 0,
            symlinks: 1,
            bytes: 4
        }
    );
}

#[test]
fn unpack_accepts_links_inside_and_later_entries_win() {
    use tar::EntryType::*;
    let tar = raw_tar(&[
        ("./", Directory, "", b""),
        ("d/", Directory, "", b""),
        ("d/f", Regular, "", b"first"),
        ("d/f", Regular, "", b"second"),
        ("d/l", Symlink, "../top", b""),
        ("top", Regular, "", b"top"),
        ("h", Link, "d/f", b""),
    ]);
    let dest = tempfile::tempdir().unwrap();
    let u = unpack(&gz(&tar)[..], dest.path(), None).unwrap();
    assert_eq!(
        u,
        hoist_context::Unpacked {
            files: 4,
            dirs: 1,
            symlinks: 1,
            bytes: 14
        }
    );
    assert_eq!(fs::read(dest.path().join("d/f")).unwrap(), b"second");
    assert_eq!(fs::read(dest.path().join("d/l")).unwrap(), b"top");
    assert_eq!(fs::read(dest.path().join("h")).unwrap(), b"second");
}

// ------------------------------------------------------------------------ round trip

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>, bool),
    Dir(BTreeMap<String, Node>),
}

fn tree() -> impl Strategy<Value = BTreeMap<String, Node>> {
    let name = "[a-c]{1,2}|\\.h|x y|é";
    let leaf = (
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(|(b, x)| Node::File(b, x));
    let node = leaf.prop_recursive(3, 24, 4, move |inner| {
        proptest::collection::btree_map(name, inner, 0..4).prop_map(Node::Dir)
    });
    proptest::collection::btree_map(name, node, 0..5)
}

fn materialise(root: &Path, t: &BTreeMap<String, Node>) {
    for (name, node) in t {
        let p = root.join(name);
        match node {
            Node::File(b, x) => {
                fs::write(&p, b).unwrap();
                fs::set_permissions(
                    &p,
                    fs::Permissions::from_mode(if *x { 0o755 } else { 0o644 }),
                )
                .unwrap();
            }
            Node::Dir(children) => {
                fs::create_dir(&p).unwrap();
                materialise(&p, children);
            }
        }
    }
}

/// path → (kind, executable, contents or link target)
fn snapshot(root: &Path) -> BTreeMap<String, (char, bool, Vec<u8>)> {
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, (char, bool, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(rel, ('l', false, t.to_string_lossy().as_bytes().to_vec()));
            } else if m.is_dir() {
                out.insert(rel, ('d', false, Vec::new()));
                go(root, &p, out);
            } else {
                out.insert(
                    rel,
                    (
                        'f',
                        m.permissions().mode() & 0o111 != 0,
                        fs::read(&p).unwrap(),
                    ),
                );
            }
        }
    }
    go(root, root, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn pack_unpack_round_trips(t in tree(), link in any::<bool>()) {
        let src = tempfile::tempdir().unwrap();
        materialise(src.path(), &t);
        if link {
            // A link to the first top-level entry, when there is one.
            if let Some(first) = t.keys().next() {
                symlink(first, src.path().join("zz-link")).unwrap();
            }
        }
        let p = pack_dir(src.path(), &PackOptions::default()).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let u = unpack(fs::File::open(&p.path).unwrap(), dest.path(), None).unwrap();
        prop_assert_eq!(u.files, p.files);
        prop_assert_eq!(u.bytes, p.bytes);
        prop_assert_eq!(snapshot(src.path()), snapshot(dest.path()));
        // The unpacked copy packs to the same digest.
        let again = pack_dir(dest.path(), &PackOptions::default()).unwrap();
        prop_assert_eq!(&again.digest, &p.digest);
        prop_assert_eq!(&again.tar_digest, &p.tar_digest);
        // And packing is stable.
        prop_assert_eq!(pack_dir(src.path(), &PackOptions::default()).unwrap().digest, p.digest);
    }
}

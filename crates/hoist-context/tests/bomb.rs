//! Decompression bombs: a real 2 MB gzip that unpacks to 2 GiB, made in the test and
//! streamed to a file (never held in memory), is refused while it is read, long before
//! the disk fills; archives with ordinary ratios, and small very compressible ones,
//! are not.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use flate2::{Compress, Compression, Crc, FlushCompress};
use hoist_context::{
    ContextError, DEFAULT_RATIO_GRACE_BYTES, Limits, inspect, unpack, unpack_with,
};

/// Raw deflate blocks of `data` from a fresh compressor, ended by a full flush: they
/// refer to nothing before them, so they can be repeated inside one stream.
fn deflate_blocks(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(64 << 10);
        }
        let done = c.total_in() as usize;
        c.compress_vec(&data[done..], &mut out, FlushCompress::Full)
            .unwrap();
        if c.total_in() as usize == data.len() && out.capacity() - out.len() >= 4096 {
            return out;
        }
    }
}

fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    *h.as_bytes()
}

/// Writes a `.tar.gz` holding one file of `size` zero bytes (a multiple of 1 MiB) to
/// `path`; returns the file's size.
fn write_bomb(path: &Path, size: u64) -> u64 {
    const CHUNK: usize = 1 << 20;
    assert_eq!(size % CHUNK as u64, 0);
    let zeros = vec![0u8; CHUNK];
    let block = deflate_blocks(&zeros);
    let header = tar_header("bomb.bin", size);
    let mut crc = Crc::new();
    let mut f = BufWriter::new(File::create(path).unwrap());
    // gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
    f.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])
        .unwrap();
    f.write_all(&deflate_blocks(&header)).unwrap();
    crc.update(&header);
    for _ in 0..size / CHUNK as u64 {
        f.write_all(&block).unwrap();
        crc.update(&zeros);
    }
    // The end of the tar: two zero blocks; then the final (empty) deflate block.
    f.write_all(&deflate_blocks(&[0u8; 1024])).unwrap();
    crc.update(&[0u8; 1024]);
    let mut last = Compress::new(Compression::best(), false);
    let mut end = Vec::with_capacity(64);
    last.compress_vec(&[], &mut end, FlushCompress::Finish)
        .unwrap();
    f.write_all(&end).unwrap();
    f.write_all(&crc.sum().to_le_bytes()).unwrap();
    f.write_all(&crc.amount().to_le_bytes()).unwrap();
    f.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn du(dir: &Path) -> u64 {
    walk(dir)
}

fn walk(p: &Path) -> u64 {
    let m = std::fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| walk(&e.unwrap().path()))
            .sum()
    } else {
        m.len()
    }
}

#[test]
fn a_2mb_upload_that_unpacks_to_2gib_is_refused_early() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = tmp.path().join("bomb.tar.gz");
    let packed = write_bomb(&bomb, 2 << 30);
    assert!(
        (1 << 20..4 << 20).contains(&packed),
        "the bomb is {packed} bytes"
    );
    // It is a real 2 GiB archive: the gzip trailer says so (size mod 2^32), and its
    // start decompresses to the 2 GiB entry's header and zeros.
    let mut raw = Vec::new();
    File::open(&bomb).unwrap().read_to_end(&mut raw).unwrap();
    let isize = u32::from_le_bytes(raw[raw.len() - 4..].try_into().unwrap());
    assert_eq!(u64::from(isize), (2u64 << 30) + 1536);
    let mut head = vec![0u8; 8 << 20];
    flate2::read::GzDecoder::new(&raw[..])
        .read_exact(&mut head)
        .unwrap();
    let mut entries = tar::Archive::new(&head[..]);
    let first = entries.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.header().size().unwrap(), 2 << 30);
    drop(raw);

    // The agent's cap (8 GiB) does not stop it; the ratio does, early.
    let dest = tmp.path().join("out");
    let e = unpack(File::open(&bomb).unwrap(), &dest, Some(8 << 30)).unwrap_err();
    let ContextError::CompressionRatio {
        unpacked,
        packed: read,
        max_ratio,
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(max_ratio, 100);
    assert!(
        unpacked > DEFAULT_RATIO_GRACE_BYTES && unpacked < 64 << 20,
        "{unpacked}"
    );
    assert!(
        read < packed,
        "refused after reading {read} of {packed} bytes"
    );
    assert!(du(&dest) < 64 << 20, "wrote {} bytes", du(&dest));
    let msg = e.to_string();
    assert!(
        msg.contains("more than 100 times its compressed size"),
        "{msg}"
    );
    assert!(msg.contains("decompression bomb"), "{msg}");

    // Inspecting it (the server's upload check) refuses it the same way.
    let e = inspect(File::open(&bomb).unwrap(), &Limits::default()).unwrap_err();
    assert!(matches!(e, ContextError::CompressionRatio { .. }), "{e:?}");

    // The ratio is configurable: a stricter one refuses it even sooner.
    let strict = Limits {
        max_ratio: Some(10),
        ratio_grace_bytes: 1 << 20,
        ..Limits::default()
    };
    let e = inspect(File::open(&bomb).unwrap(), &strict).unwrap_err();
    let ContextError::CompressionRatio { unpacked, .. } = e else {
        panic!("{e:?}")
    };
    assert!(unpacked < 8 << 20, "{unpacked}");
}

#[test]
fn ordinary_and_small_archives_pass_the_ratio_check() {
    let tmp = tempfile::tempdir().unwrap();
    // 48 MiB of zeros (about 1000:1, past the grace): refused.
    let big = tmp.path().join("big.tar.gz");
    write_bomb(&big, 48 << 20);
    assert!(matches!(
        inspect(File::open(&big).unwrap(), &Limits::default()),
        Err(ContextError::CompressionRatio { .. })
    ));
    // 16 MiB of zeros: very compressible, but small: accepted and unpacked.
    let small = tmp.path().join("small.tar.gz");
    write_bomb(&small, 16 << 20);
    let u = unpack(File::open(&small).unwrap(), &tmp.path().join("s"), None).unwrap();
    assert_eq!(u.bytes, 16 << 20);
    // 40 MiB of data that does not compress: a ratio of about 1.
    let mut tar = tar::Builder::new(Vec::new());
    let mut data = vec![0u8; 40 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "random.bin", &data[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let u = unpack_with(&gz[..], &tmp.path().join("r"), &Limits::default()).unwrap();
    assert_eq!(u.bytes, 40 << 20);
    // Without a ratio limit, the 48 MiB one unpacks too.
    let none = Limits {
        max_ratio: None,
        ..Limits::default()
    };
    let u = unpack_with(File::open(&big).unwrap(), &tmp.path().join("b"), &none).unwrap();
    assert_eq!(u.bytes, 48 << 20);
}

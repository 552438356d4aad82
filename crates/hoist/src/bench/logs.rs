//! `hoist bench logs`: one run's log filled with `--size-mb` of lines through the API,
//! then paged through from start to end by `--clients` clients at once, against a
//! `hoist server` child process (this binary, or `--server-bin` for before/after
//! numbers) on 127.0.0.1 with the default SQLite store.
//!
//! Prints append throughput against writing the same batches to a file with one
//! `fdatasync` each, read throughput against reading the same bytes from a file, and
//! the server's peak RSS (`VmHWM`) while appending and while the clients read. Numbers,
//! not a verdict: the machine is shared.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use hoist_client::Client;
use hoist_core::api::*;

use super::{ServerProcess, line, mb, peak_rss_bytes, reset_peak_rss, rss_bytes};

#[derive(Debug, Clone, clap::Args)]
pub struct LogsBench {
    /// Megabytes (10^6 bytes) of line text to append.
    #[arg(long, default_value_t = 1000)]
    pub size_mb: u64,
    /// Bytes of text per line.
    #[arg(long, default_value_t = 120)]
    pub line_bytes: usize,
    /// Lines per append request (the server takes at most 10,000).
    #[arg(long, default_value_t = 5000)]
    pub batch_lines: usize,
    /// Clients appending at once (to the same run).
    #[arg(long, default_value_t = 2)]
    pub appenders: usize,
    /// Clients paging through the whole log at once.
    #[arg(long, default_value_t = 12)]
    pub clients: usize,
    /// Lines asked for per page (the server may return fewer: it caps a page's bytes).
    #[arg(long, default_value_t = 10_000)]
    pub page_lines: u64,
    /// The `hoist` binary whose server is measured (default: this one), e.g. an older
    /// build for "before" numbers.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

fn batch(first: u64, n: usize, width: usize) -> LogBatch {
    let ts = chrono::Utc::now();
    LogBatch {
        warnings: Vec::new(),
        session: None,
        lines: (0..n as u64)
            .map(|i| {
                let mut text = format!("line {:012} ", first + i);
                while text.len() < width {
                    text.push_str("lorem ipsum dolor sit amet ");
                }
                text.truncate(width);
                LogLine {
                    ts,
                    stream: LogStream::Stdout,
                    text,
                }
            })
            .collect(),
    }
}

/// Pages through the whole log; returns (lines, text bytes).
async fn page_through(c: Client, run: String, page_lines: u64) -> anyhow::Result<(u64, u64)> {
    let (mut at, mut bytes) = (0u64, 0u64);
    loop {
        let page = c.read_logs(&run, at, Some(page_lines)).await?;
        if page.lines.is_empty() {
            return Ok((at, bytes));
        }
        for l in &page.lines {
            anyhow::ensure!(l.offset == at, "line {} where {at} was expected", l.offset);
            bytes += l.text.len() as u64;
            at += 1;
        }
    }
}

pub async fn run(b: LogsBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=10_000).contains(&b.batch_lines),
        "--batch-lines must be 1 to 10000"
    );
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let size = b.size_mb * 1_000_000;
    let width = b.line_bytes.max(20);
    let total_lines = size.div_ceil(width as u64);
    let batches = total_lines.div_ceil(b.batch_lines as u64);
    let bin = b
        .server_bin
        .clone()
        .map(Ok)
        .unwrap_or_else(std::env::current_exe)
        .context("cannot find the hoist binary")?;
    println!(
        "hoist bench logs: server {} on 127.0.0.1, SQLite store in {}",
        bin.display(),
        data.display()
    );
    println!(
        "  {} MB of text: {total_lines} lines of {width} bytes in {batches} batches of {} from {} appenders; {} readers",
        b.size_mb, b.batch_lines, b.appenders, b.clients
    );
    // The quota well above the size (a server without quotas ignores the variable).
    let srv = ServerProcess::start_with(
        &data,
        b.server_bin.as_deref(),
        &[(
            "HOIST_MAX_LOG_BYTES_PER_RUN",
            (size * 4 + (1 << 30)).to_string(),
        )],
    )?;
    let c = srv.client()?;
    c.health().await?;
    c.create_queue(&CreateQueue {
        name: "bench-logs".into(),
        entity: None,
        resource: "local-process".into(),
        config: None,
        template_variables: vec![],
        prioritize: false,
        description: None,
    })
    .await?;
    let run = c
        .launch(&LaunchRequest {
            queue: "bench-logs".into(),
            entry_point: Some(vec!["true".into()]),
            ..Default::default()
        })
        .await?;
    let idle = rss_bytes(srv.pid()).unwrap_or(0);
    line("server RSS before appending", &mb(idle), 0.0, None);

    // Appends.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..b.appenders.max(1) {
        let (c, run, next) = (c.clone(), run.id.clone(), next.clone());
        let (per, width) = (b.batch_lines, width);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= batches {
                    return anyhow::Ok(());
                }
                let first = i * per as u64;
                let n = (total_lines - first).min(per as u64) as usize;
                let page = c.append_logs(&run, &batch(first, n, width)).await?;
                anyhow::ensure!(
                    !page.quota_reached,
                    "the server's log quota was reached; run it with a larger HOIST_MAX_LOG_BYTES_PER_RUN"
                );
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let append_secs = t0.elapsed().as_secs_f64();
    let append_mbps = size as f64 / 1e6 / append_secs;
    let append_peak = peak_rss_bytes(srv.pid()).unwrap_or(0);

    // Floor: the same request bodies written to a file, one fdatasync per batch.
    let floor_path = dir.path().join("floor.ndjson");
    let floor_append_mbps = {
        let path = floor_path.clone();
        let (per, width) = (b.batch_lines, width);
        tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
            let mut f = std::fs::File::create(&path)?;
            let t0 = Instant::now();
            for i in 0..batches {
                let first = i * per as u64;
                let n = (total_lines - first).min(per as u64) as usize;
                let body = serde_json::to_vec(&batch(first, n, width))?;
                f.write_all(&body)?;
                f.sync_data()?;
            }
            Ok(size as f64 / 1e6 / t0.elapsed().as_secs_f64())
        })
        .await??
    };
    line(
        "append throughput (text, durable per request)",
        &format!("{append_mbps:.1} MB/s"),
        append_mbps,
        None,
    );
    line(
        "  floor: same bodies to a file, fdatasync each",
        &format!("{floor_append_mbps:.1} MB/s"),
        floor_append_mbps,
        None,
    );
    println!(
        "  {:<44} {:>14.2}×",
        "  ratio to the floor",
        append_mbps / floor_append_mbps
    );
    line(
        "server peak RSS (VmHWM) up to the end of appends",
        &mb(append_peak),
        0.0,
        None,
    );

    // Concurrent paging.
    let reset = reset_peak_rss(srv.pid());
    let t0 = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..b.clients.max(1) {
        readers.push(tokio::spawn(page_through(
            c.clone(),
            run.id.clone(),
            b.page_lines,
        )));
    }
    let mut read_bytes = 0;
    for r in readers {
        let (n, bytes) = r.await??;
        anyhow::ensure!(
            n == total_lines,
            "a reader saw {n} lines, not {total_lines}"
        );
        read_bytes += bytes;
    }
    let read_secs = t0.elapsed().as_secs_f64();
    let read_peak = peak_rss_bytes(srv.pid()).unwrap_or(0);
    let read_mbps = read_bytes as f64 / 1e6 / read_secs;

    // Floor: the same text read sequentially from a file (page cache warm, as the
    // server's would be), once per reader.
    let text_path = dir.path().join("floor.txt");
    let floor_read_mbps = {
        let (path, width) = (text_path.clone(), width);
        let clients = b.clients.max(1);
        tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let mut first = 0;
            while first < total_lines {
                let n = (total_lines - first).min(10_000) as usize;
                for l in batch(first, n, width).lines {
                    f.write_all(l.text.as_bytes())?;
                    f.write_all(b"\n")?;
                }
                first += n as u64;
            }
            f.flush()?;
            drop(f);
            let mut buf = vec![0u8; 1 << 20];
            let t0 = Instant::now();
            let mut total = 0u64;
            for _ in 0..clients {
                let mut f = std::fs::File::open(&path)?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
            }
            Ok(total as f64 / 1e6 / t0.elapsed().as_secs_f64())
        })
        .await??
    };
    line(
        &format!("read throughput, {} clients paging (text)", b.clients),
        &format!("{read_mbps:.1} MB/s"),
        read_mbps,
        None,
    );
    line(
        "  floor: same text read from a file, per reader",
        &format!("{floor_read_mbps:.1} MB/s"),
        floor_read_mbps,
        None,
    );
    println!(
        "  {:<44} {:>14.3}×",
        "  ratio to the floor",
        read_mbps / floor_read_mbps
    );
    if reset {
        line(
            &format!("server peak RSS (VmHWM) while {} clients read", b.clients),
            &mb(read_peak),
            0.0,
            None,
        );
    } else {
        println!("  (the kernel refused to reset VmHWM: the next figure includes the appends)");
        line("server peak RSS (VmHWM) overall", &mb(read_peak), 0.0, None);
    }
    let data_bytes = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || dir_size(&data)).await?
    };
    line("data directory after the run", &mb(data_bytes), 0.0, None);
    let _ = tokio::fs::remove_file(&floor_path).await;
    let _ = tokio::fs::remove_file(&text_path).await;
    srv.stop()?;
    Ok(())
}

fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

//! The build pipeline around an engine, with a recording engine in place of a real one
//! (the real engines have their own tests: `builder_docker.rs`, `builder_kaniko.rs`):
//! what the pipeline hands an engine (the packed context in the engine's format, the
//! Dockerfile, the tag), that the tag does not depend on the engine, that a cache hit
//! never reaches the engine, and that concurrent runs of one source build once.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hoist_agent::builders::{
    BuildError, BuildRequest, BuildSettings, Builder, ContextFormat, DirArtifacts, Engine, Pipeline,
};
use hoist_agent::logs::LogSink;
use hoist_agent::registries::{Registry, RegistryAuth, RegistryError};
use hoist_context::{PackOptions, pack_dir};
use hoist_core::api::{JobSource, Run};
use serde_json::json;

/// A registry that knows which images were "pushed" to it.
#[derive(Default)]
struct MemoryRegistry {
    images: Mutex<HashSet<String>>,
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl Registry for MemoryRegistry {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn repository(&self) -> Option<String> {
        Some("127.0.0.1:5999/team/app".into())
    }
    async fn auth(&self) -> Result<Option<RegistryAuth>, RegistryError> {
        Ok(None)
    }
    async fn has_image(&self, image: &str) -> Result<bool, RegistryError> {
        self.asked.lock().unwrap().push(image.to_string());
        Ok(self.images.lock().unwrap().contains(image))
    }
}

/// What an engine was asked to build, with the context's entries as it received them.
#[derive(Debug, Clone)]
struct Seen {
    image: String,
    tag: String,
    dockerfile: String,
    push: bool,
    gzip: bool,
    entries: Vec<String>,
    dockerfile_bytes: String,
}

struct RecordingEngine {
    format: ContextFormat,
    registry: Arc<MemoryRegistry>,
    seen: Mutex<Vec<Seen>>,
    /// Builds wait for this before "pushing", so concurrent runs overlap.
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl Engine for RecordingEngine {
    fn kind(&self) -> &'static str {
        "recording"
    }
    fn context_format(&self) -> ContextFormat {
        self.format
    }
    async fn build(&self, req: &BuildRequest<'_>, logs: &LogSink) -> Result<(), BuildError> {
        let (gzip, entries, dockerfile_bytes) = read_context(req.context, req.dockerfile);
        assert_eq!(
            std::fs::metadata(req.context).unwrap().len(),
            req.context_bytes
        );
        self.seen.lock().unwrap().push(Seen {
            image: req.image.to_string(),
            tag: req.tag.to_string(),
            dockerfile: req.dockerfile.to_string(),
            push: req.push,
            gzip,
            entries,
            dockerfile_bytes,
        });
        logs.system("[recording engine: built]");
        let _permit = self.gate.acquire().await.unwrap();
        self.registry
            .images
            .lock()
            .unwrap()
            .insert(req.image.to_string());
        Ok(())
    }
}

/// Whether `path` is gzip-compressed, its entries, and the Dockerfile's text.
fn read_context(path: &Path, dockerfile: &str) -> (bool, Vec<String>, String) {
    let bytes = std::fs::read(path).unwrap();
    let gzip = bytes.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    let mut text = String::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == dockerfile {
            e.read_to_string(&mut text).unwrap();
        }
        entries.push(name);
    }
    (gzip, entries, text)
}

fn run_for(source: JobSource, id: &str) -> Run {
    serde_json::from_value(json!({
        "id": id, "entity": "alice", "queue": "q", "project": "p", "name": "n",
        "image": null, "job": {"name": "train", "version": "v0"}, "job_source": source,
        "entry_point": null, "args": [], "env": {}, "config": {}, "resource_args": {},
        "template_values": {}, "priority": "medium", "resource": "kubernetes",
        "resource_config": {}, "state": "claimed", "state_reason": "",
        "stop_requested": false, "created_by": "alice",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "started_at": null, "ended_at": null, "agent": null, "attempts": 1,
        "exit_code": null, "failure": null
    }))
    .unwrap()
}

/// A code job without a Dockerfile (so the pipeline generates one), stored in `store`.
fn code_job(store: &Path) -> JobSource {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("train.py"), "print('hi')\n").unwrap();
    std::fs::write(src.path().join("requirements.txt"), "").unwrap();
    let p = pack_dir(src.path(), &PackOptions::default()).unwrap();
    let hex = p.digest.strip_prefix("sha256:").unwrap().to_string();
    std::fs::copy(&p.path, store.join(&hex)).unwrap();
    JobSource::Code {
        artifact: p.digest.clone(),
        size: p.compressed,
        entry_point: vec!["python".into(), "train.py".into()],
        dockerfile: None,
    }
}

fn pipeline(
    format: ContextFormat,
    store: &Path,
    work: &Path,
) -> (Pipeline, Arc<RecordingEngine>, Arc<MemoryRegistry>) {
    let registry = Arc::new(MemoryRegistry::default());
    let engine = Arc::new(RecordingEngine {
        format,
        registry: registry.clone(),
        seen: Mutex::new(Vec::new()),
        gate: tokio::sync::Semaphore::new(1),
    });
    let settings = BuildSettings {
        base_image: "127.0.0.1:5999/python:3-slim".into(),
        work_dir: Some(work.to_path_buf()),
        ..Default::default()
    };
    let p = Pipeline::new(
        engine.clone(),
        registry.clone(),
        Arc::new(DirArtifacts {
            dir: store.to_path_buf(),
        }),
        settings,
    );
    (p, engine, registry)
}

#[tokio::test]
async fn the_engine_gets_the_context_in_its_format_and_the_tag_is_the_same_for_all() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = code_job(store.path());
    let mut tags = Vec::new();
    for format in [ContextFormat::Tar, ContextFormat::TarGz] {
        let (p, engine, _) = pipeline(format, store.path(), work.path());
        assert_eq!(p.kind(), "recording");
        let logs = LogSink::new();
        let built = p
            .build(&run_for(source.clone(), "r1"), &logs)
            .await
            .unwrap();
        assert!(!built.cache_hit);
        assert_eq!(
            built.image,
            format!("127.0.0.1:5999/team/app:{}", built.tag)
        );
        let seen = engine.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.gzip, format == ContextFormat::TarGz);
        assert_eq!(
            (s.image.as_str(), s.tag.as_str()),
            (built.image.as_str(), built.tag.as_str())
        );
        assert!(s.push, "a registry is configured");
        assert!(
            s.entries.contains(&"train.py".to_string()),
            "{:?}",
            s.entries
        );
        assert!(s.entries.contains(&s.dockerfile), "{:?}", s.entries);
        assert!(
            s.dockerfile_bytes
                .contains("FROM 127.0.0.1:5999/python:3-slim"),
            "{}",
            s.dockerfile_bytes
        );
        tags.push(built.tag);
        // The workspace is gone once the build returns.
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    }
    assert_eq!(tags[0], tags[1], "the tag does not depend on the engine");
}

#[tokio::test]
async fn a_cache_hit_never_reaches_the_engine() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = code_job(store.path());
    let (p, engine, _) = pipeline(ContextFormat::TarGz, store.path(), work.path());
    let first = p
        .build(&run_for(source.clone(), "r1"), &LogSink::new())
        .await
        .unwrap();
    assert_eq!(engine.seen.lock().unwrap().len(), 1);

    // The same pipeline (memo) hits.
    let logs = LogSink::new();
    let again = p
        .build(&run_for(source.clone(), "r2"), &logs)
        .await
        .unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.image, first.image);
    // A fresh pipeline (no memo) over a registry that has the image hits too.
    let (fresh, fresh_engine, fresh_registry) =
        pipeline(ContextFormat::Tar, store.path(), work.path());
    fresh_registry
        .images
        .lock()
        .unwrap()
        .insert(first.image.clone());
    let hit = fresh
        .build(&run_for(source, "r3"), &LogSink::new())
        .await
        .unwrap();
    assert!(hit.cache_hit);
    assert_eq!(hit.image, first.image);
    assert_eq!(
        *fresh_registry.asked.lock().unwrap(),
        vec![first.image.clone()]
    );
    assert_eq!(engine.seen.lock().unwrap().len(), 1, "no second build");
    assert!(
        fresh_engine.seen.lock().unwrap().is_empty(),
        "the hit built nothing"
    );
    let text: Vec<String> = logs.snapshot().into_iter().map(|l| l.text).collect();
    assert!(
        text.iter().any(|l| l.contains("exists; no build")),
        "{text:?}"
    );
}

#[tokio::test]
async fn concurrent_runs_of_one_source_build_once() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = code_job(store.path());
    let (p, engine, _) = pipeline(ContextFormat::TarGz, store.path(), work.path());
    let p = Arc::new(p);
    // The first build holds the gate until all four runs are under way.
    let held = engine.gate.acquire().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (p, s) = (p.clone(), source.clone());
        tasks.push(tokio::spawn(async move {
            p.build(&run_for(s, &format!("c{i}")), &LogSink::new())
                .await
        }));
    }
    // Wait (with a deadline) until the one build has reached the engine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engine.seen.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no build reached the engine"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(held);
    let mut hits = 0;
    for t in tasks {
        let b = t.await.unwrap().unwrap();
        hits += usize::from(b.cache_hit);
    }
    assert_eq!(engine.seen.lock().unwrap().len(), 1, "built once");
    assert_eq!(hits, 3, "the others found the image");
}

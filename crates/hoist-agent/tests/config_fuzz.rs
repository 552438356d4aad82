//! The config loader never panics, whatever the text; what it refuses it refuses with
//! errors that say where (file and line, or the variable); and what it accepts it
//! renders into YAML that it reads back to the same configuration.

use hoist_agent::config::{ConfigErrors, ConfigOverrides, Origin, load_str};
use proptest::prelude::*;

fn no_env(_: &str) -> Option<String> {
    None
}

/// Pieces of agent configs, good and bad, to assemble into YAML-shaped text.
const PIECES: &[&str] = &[
    "entity: team\n",
    "max_jobs: -1\n",
    "max_jobs: 0\n",
    "max-jobs: 3\n",
    "queues:\n  - default\n",
    "queues: [a, b/c, 'd']\n",
    "queues: gpu\n",
    "base_url: http://127.0.0.1:8080\n",
    "environment:\n  type: aws\n  region: us-east-1\n",
    "environment:\n  type: gcp\n  region: us-central1\n",
    "environment: {type: azure}\n",
    "registry:\n  type: ecr\n  repository: r\n",
    "registry:\n  type: gcr\n  uri: us-central1-docker.pkg.dev/my-project/r/i\n",
    "registry: {uri: 127.0.0.1:5000/x}\n",
    "builder:\n  type: kaniko\n  build-context-store: s3://my-bucket/x\n",
    "builder:\n  type: buildah\n  build-context-store: gs://my-bucket/x\n",
    "  build-timeout: 25h\n",
    "  namespace: builds\n",
    "builder:\n  type: noop\n",
    "builder:\n\ttype: docker\n",
    "  kaniko-config: {spec: {a: [1, 2, {b: c}]}}\n",
    "docker:\n  allow-cap-add: [SYS_ADMIN]\n  volume-allow-list: [/data]\n",
    "local-process: {work-dir: /tmp/runs}\n",
    "stopped_run_timeout: 90s\n",
    "start_timeout: 0\n",
    "// highlight-start\n",
    "name: &a agent\nentity: *a\n",
    "<<: {entity: x}\n",
    "? [complex]\n: key\n",
    "1: 2\n",
    "---\n",
    "...\n",
    "  ",
    "- ",
    ": ",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "&x ",
    "*x ",
    "!!binary ",
    "!tag ",
    "|\n",
    ">-\n",
    "# comment\n",
    "\n",
    "é\u{0}\u{feff}",
];

fn assembled() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..12).prop_map(|v| v.concat())
}

fn roundtrip(text: &str) {
    if let Ok(loaded) = load_str(text, "fuzz.yaml", &no_env, &ConfigOverrides::default()) {
        let rendered = loaded.config.render_resolved();
        let back = load_str(
            &rendered,
            "rendered.yaml",
            &no_env,
            &ConfigOverrides::default(),
        )
        .unwrap_or_else(|e| panic!("rendering refused:\n{e}\n{rendered}\n--- from:\n{text}"));
        assert_eq!(back.config, loaded.config, "{rendered}\n--- from:\n{text}");
    } else if let Err(e) = load_str(text, "fuzz.yaml", &no_env, &ConfigOverrides::default()) {
        assert_located(&e, text);
    }
}

/// A refusal says something, and every error in it says where: the file (with a line,
/// unless it is about the whole file) or the variable, and a non-empty message.
fn assert_located(e: &ConfigErrors, text: &str) {
    assert!(!e.is_empty(), "an empty refusal of:\n{text}");
    for err in e {
        assert!(!err.message.trim().is_empty(), "{err:?}\n--- from:\n{text}");
        match &err.origin {
            Origin::File { path, line, .. } => {
                assert!(path.ends_with(".yaml"), "{err:?}");
                assert!(
                    *line > 0 || err.key.is_empty(),
                    "an error about key {} without a line: {err}\n--- from:\n{text}",
                    err.key
                );
                assert!(err.to_string().starts_with(path.as_str()), "{err}");
            }
            Origin::Env(var) => assert!(var.starts_with("HOIST_"), "{err:?}"),
            other => panic!("an error from {other:?} names no place: {err}\n--- from:\n{text}"),
        }
    }
}

/// A valid config, as text, with the values it must resolve to checked by the caller.
fn valid_config() -> impl Strategy<Value = String> {
    let name = "[a-z][a-z0-9-]{0,12}";
    let env_and_store = prop_oneof![
        Just(("", "s3://my-bucket/ctx")),
        Just((
            "environment: {type: aws, region: us-west-2}\n",
            "s3://my-bucket/a/b"
        )),
        Just((
            "environment: {type: gcp, region: europe-west4, project: my-project}\n",
            "gs://my_bucket/ctx/",
        )),
        Just((
            "environment: {type: gcp, region: us-central1}\n",
            "gs://bucket-1"
        )),
        Just((
            "environment: {type: azure}\n",
            "https://acct.blob.core.windows.net/container/x/",
        )),
    ];
    (
        prop::option::of(name),
        prop_oneof![Just(-1i64), 1i64..10_000],
        prop::collection::vec(name, 1..4),
        env_and_store,
        prop::sample::select(vec!["docker", "kaniko", "buildah", "noop"]),
        1u64..200_000,
        prop::bool::ANY,
        prop::option::of(1u64..5_000),
    )
        .prop_map(
            |(entity, max_jobs, queues, (env, store), builder, secs, millis, beat)| {
                let mut t = String::new();
                if let Some(e) = entity {
                    t.push_str(&format!("entity: {e}\n"));
                }
                t.push_str(&format!("max_jobs: {max_jobs}\nqueues: [{}]\n", queues.join(", ")));
                t.push_str(env);
                t.push_str(&format!("builder:\n  type: {builder}\n"));
                if builder == "kaniko" || builder == "buildah" {
                    t.push_str(&format!(
                        "  build-context-store: {store}\n  secret-name: creds\n  secret-key: key.json\n  kaniko-config: {{spec: {{backoffLimit: 0}}}}\n  build-timeout: {}s\n  keep-build-context: {millis}\n  namespace: builds\n",
                        secs.min(86_400)
                    ));
                }
                if millis {
                    t.push_str(&format!("stopped_run_timeout: {secs}ms\n"));
                } else {
                    t.push_str(&format!("start_timeout: {secs}\n"));
                }
                if let Some(b) = beat {
                    t.push_str(&format!("heartbeat-interval: {b}s\n"));
                }
                t
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_configs_are_accepted_and_round_trip(text in valid_config()) {
        let loaded = load_str(&text, "gen.yaml", &no_env, &ConfigOverrides::default());
        prop_assert!(loaded.is_ok(), "refused:\n{}\n{}", loaded.unwrap_err(), text);
        roundtrip(&text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        roundtrip(&text);
    }

    #[test]
    fn yaml_shaped_text_never_panics(text in assembled()) {
        roundtrip(&text);
    }

    #[test]
    fn arbitrary_environment_never_panics(
        text in assembled(),
        values in prop::collection::vec(any::<String>(), 9),
    ) {
        let vars = hoist_agent::config::ENV_VARS;
        let env = move |k: &str| vars.iter().position(|v| *v == k).map(|i| values[i].clone());
        match load_str(&text, "fuzz.yaml", &env, &ConfigOverrides::default()) {
            // What the variables set is rendered and read back like any file.
            Ok(loaded) => {
                let rendered = loaded.config.render_resolved();
                let back = load_str(&rendered, "rendered.yaml", &no_env, &ConfigOverrides::default())
                    .unwrap_or_else(|e| panic!("rendering refused:\n{e}\n{rendered}"));
                prop_assert_eq!(back.config, loaded.config);
            }
            Err(e) => assert_located(&e, &text),
        }
    }
}

/// Deepest nesting the loader reads (`hoist_core::yaml::tree::MAX_DEPTH`).
const MAX_DEPTH: usize = 32;

/// The one error of a refused text.
fn only_error(text: &str) -> String {
    let e =
        load_str(text, "deep.yaml", &no_env, &ConfigOverrides::default()).expect_err("accepted");
    assert_eq!(e.len(), 1, "{e}");
    e.messages().remove(0)
}

/// `(line, column)` of a `deep.yaml:LINE:COLUMN: …` message.
fn position(message: &str) -> (u32, u32) {
    let mut parts = message
        .strip_prefix("deep.yaml:")
        .unwrap_or_else(|| panic!("no file in {message:?}"))
        .splitn(3, ':');
    let mut number = || -> u32 {
        parts
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no line and column in {message:?}"))
    };
    (number(), number())
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    // On a thread with a 2 MiB stack (a tokio worker's): the limit must keep the
    // recursive reading far from its end, in a debug build too.
    let checks = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let too_deep = format!("the document nests deeper than {MAX_DEPTH} levels");
            // A flow sequence as a value: up to the limit it is read, and refused for
            // what it is, at its key; beyond it, refused as too deep, at the place
            // where the nesting passes the limit (not at the start of the line).
            for depth in [1usize, 10, MAX_DEPTH - 1] {
                let flow = format!("entity: {}{}\n", "[".repeat(depth), "]".repeat(depth));
                assert_eq!(
                    only_error(&flow),
                    "deep.yaml:1:1: entity: found a list; expected an entity name",
                    "depth {depth}"
                );
            }
            for depth in [MAX_DEPTH + 1, 64, 65, 200, 5000, 100_000] {
                let flow = format!("entity: {}{}\n", "[".repeat(depth), "]".repeat(depth));
                let msg = only_error(&flow);
                assert!(msg.ends_with(&too_deep), "depth {depth}: {msg}");
                let (line, column) = position(&msg);
                assert_eq!(line, 1, "{msg}");
                // `entity: ` takes 8 columns; the top-level mapping is the first level,
                // so the bracket at column 8 + MAX_DEPTH is the first one too many.
                assert!(
                    column >= 8 + MAX_DEPTH as u32 && column <= 8 + depth as u32,
                    "depth {depth}: the column is not inside the nesting, past the limit: {msg}"
                );
            }
            // Flow mappings inside `builder.kaniko-config` (a free-form section).
            for depth in [MAX_DEPTH + 1, 200, 5000] {
                let flow = format!(
                    "builder: {{type: kaniko, kaniko-config: {}{}}}\n",
                    "{a: ".repeat(depth),
                    "}".repeat(depth)
                );
                let msg = only_error(&flow);
                assert!(msg.ends_with(&too_deep), "depth {depth}: {msg}");
                assert_eq!(position(&msg).0, 1, "{msg}");
            }
            // Block mappings, one level per line: the error names the line where the
            // limit is passed.
            for depth in [MAX_DEPTH + 5, 300] {
                let mut block = String::from("builder:\n  kaniko-config:\n");
                for i in 0..depth {
                    block.push_str(&" ".repeat(4 + 2 * i));
                    block.push_str("a:\n");
                }
                let msg = only_error(&block);
                assert!(msg.ends_with(&too_deep), "depth {depth}: {msg}");
                let (line, _) = position(&msg);
                assert!(
                    (MAX_DEPTH as u32 - 2..=MAX_DEPTH as u32 + 3).contains(&line),
                    "depth {depth}: the line is not where the limit is passed: {msg}"
                );
            }
        })
        .expect("spawn");
    checks
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    let err = load_str(&text, "bomb.yaml", &no_env, &ConfigOverrides::default()).unwrap_err();
    assert_eq!(err.len(), 1, "{err}");
    let msg = err.messages().remove(0);
    assert!(msg.starts_with("bomb.yaml:"), "{msg}");
    assert!(
        msg.ends_with(
            ": the document expands to more than 250000 values; aliases (`*name`) that repeat aliases multiply what is read: write the values out"
        ),
        "the refusal does not say why: {msg}"
    );
    // It names the line where the expansion passes the limit.
    let line: u32 = msg.split(':').nth(1).and_then(|l| l.parse().ok()).unwrap();
    assert!((2..=12).contains(&line), "{msg}");
}

#[test]
fn huge_files_are_refused() {
    let text = format!("entity: team\n# {}\n", "x".repeat(2 << 20));
    let err = load_str(&text, "big.yaml", &no_env, &ConfigOverrides::default()).unwrap_err();
    assert_eq!(
        err.messages(),
        [format!(
            "big.yaml: the file is {} bytes; the limit is 1048576",
            text.len()
        )]
    );
}

//! The config loader never panics, whatever the text, and what it accepts it renders
//! into YAML that it reads back to the same configuration.

use hoist_agent::config::{ConfigOverrides, load_str};
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
        assert!(!e.is_empty());
        for err in &e {
            assert!(!err.to_string().is_empty());
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
        prop::sample::select(vec!["docker", "kaniko", "noop"]),
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
                if builder == "kaniko" {
                    t.push_str(&format!(
                        "  build-context-store: {store}\n  secret-name: creds\n  secret-key: key.json\n  kaniko-config: {{spec: {{backoffLimit: 0}}}}\n"
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
        let _ = load_str(&text, "fuzz.yaml", &env, &ConfigOverrides::default());
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [10usize, 63, 64, 65, 200, 5000] {
        let flow = format!("entity: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let _ = load_str(&flow, "deep.yaml", &no_env, &ConfigOverrides::default());
        let flow = format!(
            "builder: {{kaniko-config: {}{}}}\n",
            "{a: ".repeat(depth),
            "}".repeat(depth)
        );
        let _ = load_str(&flow, "deep.yaml", &no_env, &ConfigOverrides::default());
        let mut block = String::from("builder:\n  kaniko-config:\n");
        for i in 0..depth.min(300) {
            block.push_str(&" ".repeat(4 + 2 * i));
            block.push_str("a:\n");
        }
        let _ = load_str(&block, "deep.yaml", &no_env, &ConfigOverrides::default());
    }
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
    assert!(!err.is_empty());
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

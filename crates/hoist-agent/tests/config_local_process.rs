//! The `local-process` keys of the agent config that bound what a local job gets: its
//! environment (`allow-env-passthrough`) and its disk (`keep-failed-run-dirs`,
//! `max-run-dir-bytes`), read from YAML, refused with the line and key when wrong, and
//! rendered back by `--check-config`.

use hoist_agent::config::{
    ConfigOverrides, DEFAULT_MAX_RUN_DIR_BYTES, LocalProcessSettings, load_str,
};

fn no_env(_: &str) -> Option<String> {
    None
}

fn local(yaml: &str) -> LocalProcessSettings {
    match load_str(
        yaml,
        "launch-config.yaml",
        &no_env,
        &ConfigOverrides::default(),
    ) {
        Ok(l) => l.config.local_process,
        Err(e) => panic!("refused:\n{e}"),
    }
}

#[test]
fn defaults_and_spellings() {
    let d = local("");
    assert!(!d.allow_env_passthrough);
    assert!(!d.keep_failed_run_dirs);
    assert_eq!(d.max_run_dir_bytes, DEFAULT_MAX_RUN_DIR_BYTES);
    assert_eq!(DEFAULT_MAX_RUN_DIR_BYTES, 10 << 30);

    let l = local(
        "local-process:\n  allow-env-passthrough: true\n  keep-failed-run-dirs: true\n  max-run-dir-bytes: 512m\n",
    );
    assert!(l.allow_env_passthrough && l.keep_failed_run_dirs);
    assert_eq!(l.max_run_dir_bytes, 512 << 20);
    let l = local("local_process:\n  keep_failed_run_dirs: true\n  max_run_dir_bytes: 4096\n");
    assert!(l.keep_failed_run_dirs);
    assert_eq!(l.max_run_dir_bytes, 4096);
    assert_eq!(
        local("local-process: {max-run-dir-bytes: 10GiB}\n").max_run_dir_bytes,
        10 << 30
    );
}

#[test]
fn bad_values_name_the_line_and_key() {
    for bad in ["0", "-5", "lots", "[1]"] {
        let yaml = format!("max_jobs: 1\nlocal-process:\n  max-run-dir-bytes: {bad}\n");
        let err = load_str(
            &yaml,
            "launch-config.yaml",
            &no_env,
            &ConfigOverrides::default(),
        )
        .expect_err(bad)
        .to_string();
        assert!(
            err.contains("launch-config.yaml:3:")
                && err.contains("max-run-dir-bytes")
                && err.contains("a positive size"),
            "{bad}: {err}"
        );
    }
    let err = load_str(
        "local-process: {keep-failed-run-dirs: sometimes}\n",
        "launch-config.yaml",
        &no_env,
        &ConfigOverrides::default(),
    )
    .expect_err("not a boolean")
    .to_string();
    assert!(err.contains("keep-failed-run-dirs"), "{err}");
}

#[test]
fn rendered_back_as_read() {
    let yaml = "local-process:\n  keep-failed-run-dirs: true\n  max-run-dir-bytes: 1g\n";
    let cfg = load_str(yaml, "a.yaml", &no_env, &ConfigOverrides::default())
        .unwrap()
        .config;
    let rendered = cfg.render_resolved();
    assert!(
        rendered.contains("keep-failed-run-dirs: true"),
        "{rendered}"
    );
    let back = load_str(&rendered, "b.yaml", &no_env, &ConfigOverrides::default())
        .unwrap_or_else(|e| panic!("{e}\n{rendered}"))
        .config;
    assert_eq!(back.local_process, cfg.local_process);
}

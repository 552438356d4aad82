//! `hoist login|logout|whoami`, credentials files, HOIST_* overrides, usage errors.

mod cli_support;

use cli_support::{World, mode_of};

#[test]
fn login_whoami_logout() {
    let w = World::start();
    let key_file = w.admin_key.to_string_lossy().to_string();
    let r = w
        .run(&["login", "--host", &w.host, "--key-file", &key_file])
        .ok()
        .stdout_has("Logged in to")
        .stdout_has("as admin");
    let key = w.admin_key_text();
    assert!(
        !r.stdout.contains(&key) && !r.stderr.contains(&key),
        "the key was printed"
    );

    let creds = w.credentials();
    assert_eq!(mode_of(&creds), 0o600, "credentials file mode");
    assert_eq!(
        mode_of(creds.parent().unwrap()),
        0o700,
        "credentials dir mode"
    );
    let text = std::fs::read_to_string(&creds).unwrap();
    assert!(text.contains(&w.host) && text.contains(&key), "{text}");

    w.run(&["whoami"])
        .ok()
        .stdout_has("admin (admin)")
        .stdout_has(&w.host);
    let j = w.run(&["whoami", "-o", "json"]).ok().json();
    assert_eq!(j["user"]["name"], "admin");
    assert_eq!(j["entities"][0], "admin");
    // The global flag goes anywhere.
    let j = w.run(&["--output", "json", "whoami"]).ok().json();
    assert_eq!(j["user"]["admin"], true);

    w.run(&["logout"]).ok().stdout_has("Logged out");
    assert!(!creds.exists());
    w.run(&["whoami"]).code(1).stderr_has("not logged in");
    w.run(&["logout"]).ok().stdout_has("Not logged in");
}

#[test]
fn login_reads_the_key_from_stdin_and_refuses_bad_keys() {
    use std::io::Write;
    let w = World::start();
    let mut child = w
        .cmd(&["login", "--host", &w.host])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", w.admin_key_text()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.run(&["whoami"]).ok().stdout_has("admin");

    // A wrong key: refused by the server, nothing stored over the good credentials.
    let before = std::fs::read_to_string(w.credentials()).unwrap();
    w.run(&["login", "--host", &w.host, "--key", "hk_not_a_real_key"])
        .code(1)
        .stderr_has("did not accept the key")
        .stderr_has("not valid");
    assert_eq!(std::fs::read_to_string(w.credentials()).unwrap(), before);
    // An empty key file is invalid input.
    let empty = w.file("empty.key", "\n");
    w.run(&[
        "login",
        "--host",
        &w.host,
        "--key-file",
        empty.to_str().unwrap(),
    ])
    .code(2)
    .stderr_has("error: the API key is empty");
}

#[test]
fn environment_overrides_stored_credentials() {
    let w = World::start();
    let key = w.admin_key_text();
    // Not logged in: the environment alone is enough.
    w.run_env(
        &["whoami"],
        &[("HOIST_HOST", &w.host), ("HOIST_API_KEY", &key)],
    )
    .ok()
    .stdout_has("admin");
    w.login_admin();
    // A bad HOIST_API_KEY wins over the stored good key.
    w.run_env(&["whoami"], &[("HOIST_API_KEY", "hk_bogus")])
        .code(1)
        .stderr_has("error: the API key is not valid");
    // HOIST_HOST elsewhere: the stored key is not sent to another server.
    w.run_env(&["whoami"], &[("HOIST_HOST", "http://127.0.0.1:9")])
        .code(1)
        .stderr_has("stored credentials are for");
    // A server that is not there: exit 1 with a hint, no debug output.
    w.run_env(
        &["whoami"],
        &[
            ("HOIST_HOST", "http://127.0.0.1:9"),
            ("HOIST_API_KEY", &key),
        ],
    )
    .code(1)
    .stderr_has("cannot reach the hoist server at http://127.0.0.1:9");
}

#[test]
fn usage_errors_exit_2() {
    let w = World::start();
    w.login_admin();
    w.run(&["launch"]).code(2).stderr_has("--queue");
    w.run(&["launch", "--queue"]).code(2);
    w.run(&["queue", "create", "q"])
        .code(2)
        .stderr_has("--resource");
    w.run(&["run", "list", "--state", "sleeping"]).code(2);
    w.run(&["frobnicate"]).code(2);
    w.run(&["--log-level", "no=such=filter", "whoami"]).code(2);
    w.run(&["queue", "update", "nothing"])
        .code(2)
        .stderr_has("nothing to update");
    w.run(&["agent", "list", "--queue", "x"]).code(2);
    // --help and --version are not errors.
    w.run(&["--help"]).ok().stdout_has("Exit codes:");
    w.run(&["--version"]).ok().stdout_has("hoist");
    // The agent: a queue that does not exist is refused at registration; a bad
    // config value is invalid input; --check-config contacts nothing.
    w.run(&["agent", "--queue", "nosuch"])
        .code(1)
        .stderr_has("no queue named \"nosuch\"");
    w.run(&["agent", "--queue", "default", "-j", "0"])
        .code(2)
        .stderr_has("max_jobs");
    w.run(&["agent", "--check-config", "-q", "a", "-q", "b", "-j", "-1"])
        .ok()
        .stdout_has("max_jobs: -1");
    // `agent list` and its `launch-agent` alias work.
    w.run(&["agent", "list"]).ok().stdout_has("No agents");
    let j = w.run(&["launch-agent", "list", "-o", "json"]).ok().json();
    assert_eq!(j, serde_json::json!([]));
}

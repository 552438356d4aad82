//! `hoist user|team|key`, and what another user can and cannot see.

mod cli_support;

use cli_support::{World, field};

#[test]
fn users_teams_keys_and_visibility() {
    let w = World::start();
    w.login_admin();
    w.run(&["queue", "create", "private", "--resource", "local-process"])
        .ok();

    let created = w
        .run(&["user", "create", "alice"])
        .ok()
        .stderr_has("shown only this once");
    let alice_key = created.stdout.trim().to_string();
    assert_eq!(created.stdout.lines().count(), 1, "{}", created.stdout);
    w.run(&["user", "create", "alice"]).code(1);
    w.run(&["user", "create", "bad name"]).code(2);

    let users = w.run(&["user", "list"]).ok();
    assert!(users.stdout.contains("alice") && users.stdout.contains("admin"));
    let show = w.run(&["user", "show", "alice"]).ok();
    assert_eq!(
        field(&show.stdout, "admin").as_deref(),
        Some("no"),
        "{}",
        show.stdout
    );

    w.run(&["team", "create", "ml", "--member", "alice"])
        .ok()
        .stdout_has("members: alice");
    w.run(&["team", "list"]).ok().stdout_has("ml");
    w.run(&["team", "show", "ml"]).ok().stdout_has("alice");
    w.run(&["user", "create", "bob"]).ok();
    w.run(&["team", "add-member", "ml", "bob"])
        .ok()
        .stdout_has("alice, bob");
    w.run(&["team", "remove-member", "ml", "bob"]).ok();
    let j = w.run(&["team", "show", "ml", "-o", "json"]).ok().json();
    assert_eq!(j["members"], serde_json::json!(["alice"]));
    w.run(&[
        "queue",
        "create",
        "ml/shared",
        "--resource",
        "local-process",
    ])
    .ok();

    // Alice logs in with her key, in her own home.
    let alice_home = w.dir.path().join("alice");
    std::fs::create_dir_all(&alice_home).unwrap();
    let key_file = w.file("alice.key", &format!("{alice_key}\n"));
    w.run_home(
        &alice_home,
        &[
            "login",
            "--host",
            &w.host,
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    )
    .ok();
    w.run_home(&alice_home, &["whoami"])
        .ok()
        .stdout_has("alice")
        .stdout_has("ml");
    // The admin's personal queue is invisible to her; the team's is hers to use.
    w.run_home(&alice_home, &["queue", "show", "admin/private"])
        .code(1)
        .stderr_has("no queue admin/private");
    let qs = w.run_home(&alice_home, &["queue", "list"]).ok();
    assert!(
        qs.stdout.contains("ml/shared") && !qs.stdout.contains("admin/private"),
        "{}",
        qs.stdout
    );
    w.run_home(&alice_home, &["launch", "-q", "shared", "--", "true"])
        .ok();
    w.run_home(&alice_home, &["launch", "-q", "private", "--", "true"])
        .code(1);
    // Admin-only actions are refused.
    w.run_home(&alice_home, &["user", "create", "mallory"])
        .code(1)
        .stderr_has("only admins");

    // Keys: alice makes a second key, lists and revokes it.
    let second = w
        .run_home(&alice_home, &["key", "create", "--name", "laptop"])
        .ok()
        .stderr_has("shown only this once");
    let second_key = second.stdout.trim().to_string();
    w.run_env(&["whoami"], &[("HOIST_API_KEY", &second_key)])
        .ok()
        .stdout_has("alice");
    let keys = w
        .run_home(&alice_home, &["key", "list", "-o", "json"])
        .ok()
        .json();
    let id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "laptop")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.run_home(&alice_home, &["key", "list"])
        .ok()
        .stdout_has("laptop");
    w.run_home(&alice_home, &["key", "list", "--all"]).code(1);
    w.run(&["key", "list", "--all"]).ok().stdout_has("laptop");
    w.run_home(&alice_home, &["key", "revoke", &id]).ok();
    w.run_env(&["whoami"], &[("HOIST_API_KEY", &second_key)])
        .code(1)
        .stderr_has("not valid");
    // The admin makes a key for alice.
    let k = w
        .run(&["key", "create", "--user", "alice", "-o", "json"])
        .ok()
        .json();
    assert_eq!(k["key"]["user"], "alice");
    assert!(k["secret"].as_str().is_some_and(|s| !s.is_empty()));

    // Teams with queues cannot go; empty ones can.
    w.run(&["team", "delete", "ml"]).code(1);
    w.run(&["team", "create", "tmp"]).ok();
    w.run(&["team", "delete", "tmp"])
        .ok()
        .stdout_has("Deleted team tmp");

    // Deleting a user: admins only; their keys stop working; the name stays taken.
    w.run(&["user", "create", "carol"]).ok();
    let carol_key = w.run(&["key", "create", "--user", "carol"]).ok().stdout;
    w.run_home(&alice_home, &["user", "delete", "carol"])
        .code(1)
        .stderr_has("only admins");
    w.run(&["user", "delete", "carol"])
        .ok()
        .stdout_has("Deleted user carol");
    w.run_env(&["whoami"], &[("HOIST_API_KEY", carol_key.trim())])
        .code(1)
        .stderr_has("not valid");
    w.run(&["user", "show", "carol"]).code(1);
    w.run(&["user", "create", "carol"])
        .code(1)
        .stderr_has("deleted user");
}

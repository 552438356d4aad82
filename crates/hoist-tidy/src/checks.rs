//! One function per invariant. Each returns the places that break it.

use regex::Regex;

use crate::lex::{async_blocks, enclosing_fn, functions, matching_paren};
use crate::{SourceFile, Tree, Violation, crate_of};

/// Every check, in the order `tests/tidy.rs` reports them.
pub fn all(tree: &Tree) -> Vec<Violation> {
    let mut v = Vec::new();
    v.extend(sql_only_in_store(tree));
    v.extend(core_does_no_io(tree));
    v.extend(agent_talks_http_only(tree));
    v.extend(fakes_stay_out_of_the_product(tree));
    v.extend(web_goes_through_the_api(tree));
    v.extend(web_posts_carry_csrf(tree));
    v.extend(local_only_changes_come_from_the_cluster(tree));
    v.extend(one_state_change(tree));
    v.extend(no_state_lists_in_sql(tree));
    v.extend(no_blocking_in_async(tree));
    v.extend(secrets_are_typed(tree));
    v.extend(anyhow_only_in_binary(tree));
    v.extend(workspace_lints(tree));
    v.extend(migrations_in_step(tree));
    v.extend(no_bare_sleeps_in_tests(tree));
    v
}

/// A compiled regex, cached by pattern (the checks run over every file).
fn word(pattern: &str) -> Regex {
    static CACHE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Regex>>> =
        std::sync::LazyLock::new(Default::default);
    let mut cache = CACHE.lock().expect("regex cache");
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).expect("valid regex"))
        .clone()
}

/// Finds `re` in the blanked code of `f`, skipping lines that opt out of `check`.
fn find_in_code<'f>(
    f: &'f SourceFile,
    check: &'static str,
    re: &'f Regex,
) -> impl Iterator<Item = usize> + 'f {
    re.find_iter(&f.lexed.code)
        .map(|m| m.start())
        .filter(move |&o| !f.allowed(check, f.line_of(o)))
}

/// Architecture Invariant: every SQL statement lives in `hoist-server/src/store/`; the
/// API layer calls store methods, never SQL (and never sees a `sqlx` type). The test
/// kit's per-test database (`hoist-testkit/src/pg.rs`) creates and drops databases,
/// which no store does: it is the one other place.
pub fn sql_only_in_store(tree: &Tree) -> Vec<Violation> {
    let re = word(r"\bsqlx::");
    let mut out = Vec::new();
    for f in tree.src() {
        if f.rel.starts_with("crates/hoist-server/src/store/")
            || f.rel == "crates/hoist-testkit/src/pg.rs"
        {
            continue;
        }
        for o in find_in_code(f, "sql", &re) {
            out.push(f.violation(
                "sql",
                o,
                "`sqlx::` outside hoist-server/src/store/: add a store method and call it".into(),
            ));
        }
    }
    out
}

/// Architecture Invariant: `hoist-core` does no IO: no files, environment, processes,
/// threads or runtime (`std::net` address types are plain data); and depends on nothing
/// that does.
pub fn core_does_no_io(tree: &Tree) -> Vec<Violation> {
    let re = word(r"\b(std::fs|std::env|std::process|std::thread|tokio|reqwest|sqlx|bollard)\b");
    let mut out = Vec::new();
    for f in tree
        .src()
        .filter(|f| f.rel.starts_with("crates/hoist-core/"))
    {
        for o in find_in_code(f, "core-io", &re) {
            let what = re
                .find(&f.lexed.code[o..])
                .map(|m| m.as_str())
                .unwrap_or("");
            out.push(f.violation(
                "core-io",
                o,
                format!("`{what}` in hoist-core, which does no IO: do it in the server, the agent or the CLI and pass the result in"),
            ));
        }
    }
    for (rel, text) in &tree.manifests {
        if rel != "crates/hoist-core/Cargo.toml" {
            continue;
        }
        for dep in ["tokio", "reqwest", "sqlx", "bollard", "hyper", "axum"] {
            if let Some(line) = dependency_line(text, "dependencies", dep) {
                out.push(Violation {
                    check: "core-io",
                    file: rel.clone(),
                    line,
                    message: format!("hoist-core depends on `{dep}`; it must stay free of IO"),
                });
            }
        }
    }
    out
}

/// Architecture Invariant: the agent talks to the server over HTTP only: neither it nor
/// the client depend on the server crate or on a database driver.
pub fn agent_talks_http_only(tree: &Tree) -> Vec<Violation> {
    let mut out = Vec::new();
    for (rel, text) in &tree.manifests {
        if !matches!(
            rel.as_str(),
            "crates/hoist-agent/Cargo.toml" | "crates/hoist-client/Cargo.toml"
        ) {
            continue;
        }
        for section in ["dependencies", "dev-dependencies"] {
            for dep in ["hoist-server", "sqlx"] {
                if section == "dev-dependencies" && dep == "hoist-server" {
                    // Tests may start a real server to talk to.
                    continue;
                }
                if let Some(line) = dependency_line(text, section, dep) {
                    out.push(Violation {
                        check: "agent-http",
                        file: rel.clone(),
                        line,
                        message: format!(
                            "`{dep}` in [{section}]: the agent reaches the store only through the server's HTTP API"
                        ),
                    });
                }
            }
        }
    }
    out
}

/// Architecture Invariant: the scripted cloud fakes (`hoist-fakes`) serve tests and
/// `hoist bench` only: no library crate depends on them outside `[dev-dependencies]`,
/// so the agent and the server can never talk to a fake by accident.
pub fn fakes_stay_out_of_the_product(tree: &Tree) -> Vec<Violation> {
    let mut out = Vec::new();
    for (rel, text) in &tree.manifests {
        // The binary holds `hoist bench`, which runs against the fakes.
        if rel == "crates/hoist/Cargo.toml" || rel == "crates/hoist-fakes/Cargo.toml" {
            continue;
        }
        for section in ["dependencies", "build-dependencies"] {
            if let Some(line) = dependency_line(text, section, "hoist-fakes") {
                out.push(Violation {
                    check: "fakes",
                    file: rel.clone(),
                    line,
                    message: format!(
                        "`hoist-fakes` in [{section}]: the cloud fakes are for tests (`[dev-dependencies]`) and `hoist bench` only"
                    ),
                });
            }
        }
    }
    out
}

const WEB_DIR: &str = "crates/hoist-server/src/web/";

/// Architecture Invariant: every wake-up and every cache change reaches the other
/// replicas of the database. The `*_here` variants of `Dispatch`'s wake-ups and of the
/// caches' forgets act on this replica only; they are for applying what another
/// replica said, so only `cluster.rs` calls them (and their own types, on `self`).
pub fn local_only_changes_come_from_the_cluster(tree: &Tree) -> Vec<Violation> {
    let call = word(r"(\w+)?\s*\.\s*(?:wake_[a-z_]*_here|forget_[a-z_]*here|clear_here)\s*\(");
    let mut out = Vec::new();
    for f in tree.src().filter(|f| {
        f.rel.starts_with("crates/hoist-server/src/") && !f.rel.ends_with("/cluster.rs")
    }) {
        for c in call.captures_iter(&f.lexed.code) {
            if c.get(1).is_some_and(|r| r.as_str() == "self") {
                continue;
            }
            let o = c.get(0).expect("match").start();
            if f.allowed("cluster-local", f.line_of(o)) {
                continue;
            }
            out.push(f.violation(
                "cluster-local",
                o,
                "a replica-local wake-up or cache change outside cluster.rs: call the variant without `_here`, which also tells the other replicas".into(),
            ));
        }
    }
    out
}

/// Architecture Invariant: the web UI reads and changes things only through the API's
/// handlers (and `auth` for its sessions): no store, log store or dispatch in
/// `hoist-server/src/web/`, so every page enforces exactly the API's access rules.
pub fn web_goes_through_the_api(tree: &Tree) -> Vec<Violation> {
    let re = word(r"\.store\b|\bcrate::store\b|\.logs\b|\bcrate::logs\b|\.dispatch\b|\bsqlx\b");
    let mut out = Vec::new();
    for f in tree.src().filter(|f| f.rel.starts_with(WEB_DIR)) {
        for o in find_in_code(f, "web-via-api", &re) {
            out.push(f.violation(
                "web-via-api",
                o,
                "the web UI touches the store, the log store or dispatch directly: call the API's handler (crate::api::…) instead, adding what it lacks to the API".into(),
            ));
        }
    }
    out
}

/// Every state-changing web route (`post(handler)`) has a handler that takes
/// `Posted<…>`, the extractor that checks the session's CSRF token first.
pub fn web_posts_carry_csrf(tree: &Tree) -> Vec<Violation> {
    let route = word(r"\bpost\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)");
    let mut out = Vec::new();
    for f in tree.src().filter(|f| f.rel.starts_with(WEB_DIR)) {
        let code = &f.lexed.code;
        let fns = functions(code);
        for c in route.captures_iter(code) {
            let name = c.get(1).expect("group").as_str();
            let at = c.get(0).expect("match").start();
            if f.allowed("web-csrf", f.line_of(at)) {
                continue;
            }
            let checked = fns.iter().find(|s| s.name == name).is_some_and(|s| {
                let sig_start = code[..s.body.0]
                    .rfind(&format!("fn {name}"))
                    .unwrap_or(s.body.0);
                code[sig_start..s.body.0].contains("Posted<")
            });
            if !checked {
                out.push(f.violation(
                    "web-csrf",
                    at,
                    format!("the POST handler `{name}` does not take `Posted<…>`, which checks the CSRF token; take it (or, for the sign-in form, say why with `tidy: allow(web-csrf) because …`)"),
                ));
            }
        }
    }
    out
}

/// The 1-based line of `dep` in the `[section]` table of a manifest.
fn dependency_line(manifest: &str, section: &str, dep: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in manifest.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let name = t.split(['=', '.', ' ']).next().unwrap_or("");
        if current == section && name == dep {
            return Some(i + 1);
        }
    }
    None
}

fn sql_updates_state(sql: &str) -> bool {
    let re = word(r"(?is)\bUPDATE\s+runs\s+SET\b(.*?)(\bWHERE\b|$)");
    let state = word(r"(?i)(^|[\s,])state\s*=");
    re.captures_iter(sql).any(|c| state.is_match(&c[1]))
}

/// Architecture Invariant: every state change of a run goes through one function (which
/// calls `check_transition` and updates conditionally on the state it read): it holds the
/// only SQL that sets `runs.state`.
pub fn one_state_change(tree: &Tree) -> Vec<Violation> {
    let mut sites: Vec<(&SourceFile, usize, String)> = Vec::new();
    for f in tree.src() {
        let fns = functions(&f.lexed.code);
        for (off, s) in &f.lexed.strings {
            if sql_updates_state(s) && !f.allowed("state-change", f.line_of(*off)) {
                let name = enclosing_fn(&fns, *off)
                    .map(|x| x.name.clone())
                    .unwrap_or_default();
                sites.push((f, *off, name));
            }
        }
    }
    let mut owners: Vec<(String, String)> = sites
        .iter()
        .map(|(f, _, n)| (f.rel.clone(), n.clone()))
        .collect();
    owners.sort();
    owners.dedup();
    let mut out = Vec::new();
    let ok = owners.len() == 1 && owners[0].0.starts_with("crates/hoist-server/src/store/");
    if !ok {
        let names: Vec<String> = owners.iter().map(|(f, n)| format!("{f}::{n}")).collect();
        for (f, off, _) in &sites {
            out.push(f.violation(
                "state-change",
                *off,
                format!(
                    "SQL that sets runs.state must live in one store function (found in: {}); call that function instead",
                    names.join(", ")
                ),
            ));
        }
    }
    out
}

const STATES: &str =
    "queued|claimed|building|starting|running|stopping|unknown|finished|failed|stopped|cancelled";

/// Lists of run states are generated from `RunState` (its `ALL` and predicates such as
/// `is_held_by_agent`), never written out by hand in SQL, so a new state cannot be
/// forgotten in one query.
pub fn no_state_lists_in_sql(tree: &Tree) -> Vec<Violation> {
    let list = word(&format!(r"(?i)'({STATES})'\s*,\s*'({STATES})'"));
    let single = word(&format!(r"(?i)\bIN\s*\(\s*'({STATES})'\s*\)"));
    let mut out = Vec::new();
    for f in tree.src() {
        for (off, s) in &f.lexed.strings {
            if (list.is_match(s) || single.is_match(s)) && !f.allowed("state-list", f.line_of(*off))
            {
                out.push(f.violation(
                    "state-list",
                    *off,
                    "a list of run states written by hand in SQL: generate it from RunState (e.g. RunState::ALL filtered by is_held_by_agent)".into(),
                ));
            }
        }
    }
    out
}

/// Async code never blocks: in hoist-agent, `std::fs`, `std::process` and
/// `std::thread::sleep` do not appear inside async functions or blocks, except inside a
/// `spawn_blocking(…)` call.
pub fn no_blocking_in_async(tree: &Tree) -> Vec<Violation> {
    let mut out = Vec::new();
    for f in tree
        .src()
        .filter(|f| f.rel.starts_with("crates/hoist-agent/src/"))
    {
        out.extend(blocking_in_async_file(f));
    }
    out
}

/// [`no_blocking_in_async`] for one file.
pub fn blocking_in_async_file(f: &SourceFile) -> Vec<Violation> {
    let code = &f.lexed.code;
    let imports_fs = word(r"use\s+std::(fs\s*;|\{[^}]*\bfs\b)").is_match(code);
    let imports_cmd = word(r"use\s+std::process::(Command|\{[^}]*\bCommand\b)").is_match(code);
    let mut patterns = vec![
        (word(r"\bstd::fs::"), "std::fs"),
        (word(r"\bstd::process::"), "std::process"),
        (word(r"\b(std::)?thread::sleep\b"), "std::thread::sleep"),
    ];
    if imports_fs {
        patterns.push((word(r"(^|[^:\w])fs::[a-z_]+"), "std::fs (imported as fs)"));
    }
    if imports_cmd {
        patterns.push((word(r"(^|[^:\w])Command::new\b"), "std::process::Command"));
    }
    let mut spans: Vec<(usize, usize)> = functions(code)
        .into_iter()
        .filter(|x| x.is_async)
        .map(|x| x.body)
        .collect();
    spans.extend(async_blocks(code));
    let exempt: Vec<(usize, usize)> = word(r"\b(spawn_blocking|block_in_place)\s*\(")
        .find_iter(code)
        .filter_map(|m| {
            let open = m.end() - 1;
            matching_paren(code, open).map(|e| (open, e))
        })
        .collect();
    let mut out = Vec::new();
    for (re, what) in &patterns {
        for m in re.find_iter(code) {
            let o = m.start();
            let in_async = spans.iter().any(|(a, b)| *a <= o && o <= *b);
            let exempted = exempt.iter().any(|(a, b)| *a <= o && o <= *b);
            if in_async && !exempted && !f.allowed("blocking", f.line_of(o)) {
                out.push(f.violation(
                    "blocking",
                    o,
                    format!("{what} inside async code blocks the agent's runtime: use tokio::fs / tokio::process, or move it into spawn_blocking"),
                ));
            }
        }
    }
    out.sort_by_key(|v| v.line);
    out.dedup_by_key(|v| v.line);
    out
}

/// Secrets never reach `Debug` output: a field that holds a credential (by its name) in
/// a struct that derives `Debug` has the type `Secret` (or `Option<Secret>`), not `String`.
pub fn secrets_are_typed(tree: &Tree) -> Vec<Violation> {
    let mut out = Vec::new();
    for f in tree.src() {
        out.extend(secrets_are_typed_file(f));
    }
    out
}

/// [`secrets_are_typed`] for one file.
pub fn secrets_are_typed_file(f: &SourceFile) -> Vec<Violation> {
    let code = &f.lexed.code;
    let derive_debug = word(r"#\[derive\([^)]*\bDebug\b[^)]*\)\]");
    let strukt = word(r"^\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?struct\s+\w+[^{;(]*\{");
    let field = word(
        r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?(token|password|passwd|secret|api_key|secret_key|secret_access_key|client_secret|refresh_token|access_token|identitytoken|identity_token|session_token|run_token)\s*:\s*(Option<\s*)?String\b",
    );
    let mut out = Vec::new();
    for d in derive_debug.find_iter(code) {
        let rest = &code[d.end()..];
        let Some(s) = strukt.find(rest) else { continue };
        if s.start() != 0 {
            continue;
        }
        let open = d.end() + s.end() - 1;
        let Some(close) = crate::lex::matching_brace(code, open) else {
            continue;
        };
        for m in field.captures_iter(&code[open..close]) {
            let o = open + m.get(1).expect("group").start();
            if !f.allowed("secret-type", f.line_of(o)) {
                out.push(f.violation(
                    "secret-type",
                    o,
                    format!(
                        "field `{}` holds a credential as a plain String in a struct that derives Debug: make it hoist_core::secret::Secret",
                        &m[1]
                    ),
                ));
            }
        }
    }
    out
}

/// `anyhow` only in the binary: libraries return typed errors.
pub fn anyhow_only_in_binary(tree: &Tree) -> Vec<Violation> {
    let mut out = Vec::new();
    for (rel, text) in &tree.manifests {
        if rel == "crates/hoist/Cargo.toml" {
            continue;
        }
        if let Some(line) = dependency_line(text, "dependencies", "anyhow") {
            out.push(Violation {
                check: "anyhow",
                file: rel.clone(),
                line,
                message: "a library crate depends on anyhow: give its boundary a thiserror enum"
                    .into(),
            });
        }
    }
    out
}

/// Every crate takes the workspace lints (`unsafe_code = "forbid"` among them).
pub fn workspace_lints(tree: &Tree) -> Vec<Violation> {
    let re = word(r"(?m)^\[lints\]\s*\n\s*workspace\s*=\s*true");
    tree.manifests
        .iter()
        .filter(|(rel, text)| rel.matches('/').count() == 2 && !re.is_match(text))
        .map(|(rel, _)| Violation {
            check: "lints",
            file: rel.clone(),
            line: 1,
            message: "missing `[lints] workspace = true` (the workspace forbids unsafe code)"
                .into(),
        })
        .collect()
}

/// Both SQL dialects have the same migrations (number and name), and the store embeds
/// every one of them.
pub fn migrations_in_step(tree: &Tree) -> Vec<Violation> {
    let dir = "crates/hoist-server/migrations/";
    let names = |dialect: &str| -> Vec<String> {
        tree.sql
            .iter()
            .filter_map(|(rel, _)| rel.strip_prefix(&format!("{dir}{dialect}/")))
            .map(str::to_string)
            .collect()
    };
    let (lite, pg) = (names("sqlite"), names("postgres"));
    let mut out = Vec::new();
    for (have, other, missing_in) in [(&lite, &pg, "postgres"), (&pg, &lite, "sqlite")] {
        for n in have.iter().filter(|n| !other.contains(n)) {
            out.push(Violation {
                check: "migrations",
                file: format!("{dir}{missing_in}/{n}"),
                line: 1,
                message: format!(
                    "migration {n} exists for one dialect only: write its {missing_in} twin"
                ),
            });
        }
    }
    if let Some(store) = tree
        .rust
        .iter()
        .find(|f| f.rel == "crates/hoist-server/src/store/mod.rs")
    {
        for (dialect, list) in [("sqlite", &lite), ("postgres", &pg)] {
            for n in list {
                let needle = format!("migrations/{dialect}/{n}");
                if !store.text.contains(&needle) {
                    out.push(Violation {
                        check: "migrations",
                        file: store.rel.clone(),
                        line: 1,
                        message: format!("migration {needle} is not embedded by the store"),
                    });
                }
            }
        }
    }
    out
}

/// Tests wait on conditions with deadlines, never on a bare sleep: in test files, a
/// `sleep(` is inside a loop (polling a condition) or opts out with a reason.
pub fn no_bare_sleeps_in_tests(tree: &Tree) -> Vec<Violation> {
    let mut out = Vec::new();
    for f in tree.tests() {
        out.extend(bare_sleeps_file(f));
    }
    out
}

/// [`no_bare_sleeps_in_tests`] for one file.
pub fn bare_sleeps_file(f: &SourceFile) -> Vec<Violation> {
    let code = &f.lexed.code;
    let sleep = word(r"\bsleep(_until)?\s*\(");
    let loop_head = word(r"\b(loop|while|for)\b");
    let loops: Vec<(usize, usize)> = loop_head
        .find_iter(code)
        .filter_map(|m| {
            // The loop's body: the first `{` after the head (heads contain no braces here).
            let open = m.end() + code[m.end()..].find('{')?;
            if code[m.end()..open].contains(';') {
                return None;
            }
            crate::lex::matching_brace(code, open).map(|e| (open, e))
        })
        .collect();
    let fns = functions(code);
    sleep
        .find_iter(code)
        .map(|m| m.start())
        .filter(|&o| {
            // The definition of a helper named `sleep` is not a call.
            !code[..o].trim_end().ends_with("fn")
        })
        .filter(|&o| !loops.iter().any(|(a, b)| *a <= o && o <= *b))
        .filter(|&o| {
            // Polling helpers (`wait_for`, `eventually`, …) are loops by another name.
            !enclosing_fn(&fns, o).is_some_and(|x| x.name.starts_with("wait") || x.name == "eventually")
        })
        .filter(|&o| !f.allowed("sleep", f.line_of(o)))
        .map(|o| {
            f.violation(
                "sleep",
                o,
                "a bare sleep in a test: wait for the condition (poll it with a deadline, or await the event)".into(),
            )
        })
        .collect()
}

/// For messages: the crate a violation is in.
pub fn crate_name(v: &Violation) -> &str {
    crate_of(&v.file).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, src: &str) -> SourceFile {
        SourceFile::new(rel, src)
    }

    /// `check(files, expected)`: the violations' `check:line` list for a small tree.
    fn check(files: &[(&str, &str)], expected: &[&str]) {
        let tree = Tree {
            root: "/".into(),
            rust: files.iter().map(|(r, s)| file(r, s)).collect(),
            manifests: vec![],
            sql: vec![],
        };
        let got: Vec<String> = all(&tree)
            .iter()
            .map(|v| format!("{}:{}:{}", v.file, v.check, v.line))
            .collect();
        assert_eq!(got, expected, "{:#?}", all(&tree));
    }

    #[test]
    fn sql_outside_store() {
        check(
            &[
                (
                    "crates/hoist-server/src/store/a.rs",
                    "fn a() { sqlx::query(\"x\"); }",
                ),
                (
                    "crates/hoist-server/src/api/b.rs",
                    "// sqlx::query\nfn b() { let s = \"sqlx::\"; sqlx::query(s); }",
                ),
            ],
            &["crates/hoist-server/src/api/b.rs:sql:2"],
        );
    }

    #[test]
    fn web_goes_through_the_api_and_posts_carry_csrf() {
        check(
            &[(
                "crates/hoist-server/src/web/x.rs",
                "async fn a(s: AppState) { s.store.get_run(\"x\").await; }\n// s.store in a comment\nasync fn b() { crate::api::runs::get_run().await; }",
            )],
            &["crates/hoist-server/src/web/x.rs:web-via-api:1"],
        );
        check(
            &[(
                "crates/hoist-server/src/web/x.rs",
                "fn routes() { Router::new().route(\"/a\", get(page).post(save)).route(\"/b\", post(nope))\n.route(\"/c\", post(login)) // tidy: allow(web-csrf) because the sign-in nonce\n; }\nasync fn save(State(s): State<AppState>, p: Posted<Form>) -> R { }\nasync fn nope(who: WebUser) -> R { }\nasync fn login() -> R { }",
            )],
            &["crates/hoist-server/src/web/x.rs:web-csrf:1"],
        );
    }

    #[test]
    fn cluster_local() {
        check(
            &[
                (
                    "crates/hoist-server/src/cluster.rs",
                    "fn apply(s: &AppState) { s.dispatch.wake_queue_here(\"q\"); s.auth.clear_here(); }",
                ),
                (
                    "crates/hoist-server/src/api/x.rs",
                    "fn f(s: &AppState) { s.dispatch.wake_queue(\"q\");\n s.auth.forget_key_here(\"k\"); }\n// s.queues.clear_here() in a comment\nimpl C { fn forget(&self) { self.forget_here(); } }",
                ),
            ],
            &["crates/hoist-server/src/api/x.rs:cluster-local:2"],
        );
    }

    #[test]
    fn core_io() {
        check(
            &[(
                "crates/hoist-core/src/x.rs",
                "// tokio in a comment\nfn g() { let s = \"reqwest\"; }",
            )],
            &[],
        );
        check(
            &[(
                "crates/hoist-core/src/x.rs",
                "fn f() { std::env::var(\"X\"); }",
            )],
            &["crates/hoist-core/src/x.rs:core-io:1"],
        );
    }

    #[test]
    fn fakes_only_for_tests_and_the_bench() {
        let manifests = |rel: &str, text: &str| Tree {
            root: "/".into(),
            rust: vec![],
            manifests: vec![(rel.to_string(), text.to_string())],
            sql: vec![],
        };
        let agent = "[dependencies]\nreqwest = \"1\"\nhoist-fakes.workspace = true\n";
        let v = fakes_stay_out_of_the_product(&manifests("crates/hoist-agent/Cargo.toml", agent));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].line, 3);
        let dev =
            "[dependencies]\nreqwest = \"1\"\n[dev-dependencies]\nhoist-fakes.workspace = true\n";
        assert!(
            fakes_stay_out_of_the_product(&manifests("crates/hoist-agent/Cargo.toml", dev))
                .is_empty()
        );
        assert!(
            fakes_stay_out_of_the_product(&manifests("crates/hoist/Cargo.toml", agent)).is_empty()
        );
    }

    #[test]
    fn state_changes_in_one_function() {
        let one = "fn transition() { q(\"UPDATE runs SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4\"); }\nfn other() { q(\"UPDATE runs SET stop_pending = 0 WHERE state = 'queued'\"); }";
        check(&[("crates/hoist-server/src/store/runs.rs", one)], &[]);
        let two = "fn transition() { q(\"UPDATE runs SET state = $1 WHERE id = $2\"); }\nfn claim() { q(\"UPDATE runs SET agent_id = $1,\\n state = 'claimed' WHERE id = $2\"); }";
        check(
            &[("crates/hoist-server/src/store/runs.rs", two)],
            &[
                "crates/hoist-server/src/store/runs.rs:state-change:1",
                "crates/hoist-server/src/store/runs.rs:state-change:2",
            ],
        );
    }

    #[test]
    fn state_lists() {
        check(
            &[(
                "crates/hoist-server/src/store/runs.rs",
                "fn f() { q(\"SELECT 1 FROM runs WHERE state IN ('claimed','building')\"); q(\"WHERE state = 'queued'\"); }",
            )],
            &["crates/hoist-server/src/store/runs.rs:state-list:1"],
        );
    }

    #[test]
    fn blocking_in_async() {
        let src = "use std::fs;\nasync fn a() {\n    fs::remove_dir_all(p);\n    tokio::fs::remove_dir_all(p).await;\n    tokio::task::spawn_blocking(move || std::fs::read(p)).await;\n}\nfn sync_ok() { std::fs::read(p); }\nasync fn b() {\n    let f = async move { std::process::Command::new(\"x\") };\n    // tidy: allow(blocking) because the file is tiny and read once at start\n    std::fs::read(p);\n}";
        check(
            &[("crates/hoist-agent/src/x.rs", src)],
            &[
                "crates/hoist-agent/src/x.rs:blocking:3",
                "crates/hoist-agent/src/x.rs:blocking:9",
            ],
        );
    }

    #[test]
    fn secret_fields() {
        let src = "#[derive(Debug, Clone)]\npub struct A {\n    pub token: String,\n    pub name: String,\n    password: Option<String>,\n}\n#[derive(Clone)]\nstruct B { token: String }\n#[derive(Debug)]\nstruct C { token: Secret }";
        check(
            &[("crates/hoist-agent/src/x.rs", src)],
            &[
                "crates/hoist-agent/src/x.rs:secret-type:3",
                "crates/hoist-agent/src/x.rs:secret-type:5",
            ],
        );
    }

    #[test]
    fn sleeps_in_tests() {
        let src = "async fn t() {\n    tokio::time::sleep(d).await;\n    loop {\n        if done() { break; }\n        tokio::time::sleep(d).await;\n    }\n    let cmd = \"sleep 3\";\n}\nfn wait_for(c: impl Fn() -> bool) { while !c() { std::thread::sleep(d); } }\nasync fn wait_until() { sleep(d).await; }";
        check(
            &[("crates/hoist/tests/x.rs", src)],
            &["crates/hoist/tests/x.rs:sleep:2"],
        );
    }

    #[test]
    fn opt_out_needs_a_reason() {
        let src = "fn f() {\n    // tidy: allow(sql)\n    sqlx::query(\"x\");\n    // tidy: allow(sql) because the readiness probe\n    sqlx::query(\"y\");\n}";
        check(
            &[("crates/hoist-server/src/api/mod.rs", src)],
            &["crates/hoist-server/src/api/mod.rs:sql:3"],
        );
    }
}

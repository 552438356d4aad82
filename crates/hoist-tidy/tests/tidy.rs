//! The architecture invariants, checked over the whole repository in one test (see
//! `hoist_tidy::checks` for each rule and ARCHITECTURE.md for why).

use std::path::Path;

#[test]
fn tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tree = hoist_tidy::Tree::read(&root).expect("read the workspace");
    assert!(
        tree.rust.len() > 50,
        "tidy read only {} Rust files below {}: is the path right?",
        tree.rust.len(),
        root.display()
    );
    let violations = hoist_tidy::checks::all(&tree);
    if !violations.is_empty() {
        let list: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
        panic!(
            "{} architecture invariant violation(s) (see ARCHITECTURE.md; a line may opt out with `// tidy: allow(CHECK) because REASON`):\n{}",
            violations.len(),
            list.join("\n")
        );
    }
}

//! The test cluster through the kubectl `scripts/test-env.sh` built from the cluster's
//! own sources (`HOIST_TEST_KUBECTL`, not the system's) and its admin kubeconfig
//! (`HOIST_TEST_KUBECONFIG`), and a namespace per test.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{LONG, unique};

/// A command's exit status and output, for failure messages.
pub fn show_output(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kubectl --kubeconfig ADMIN …` on the host (the API server is forwarded there).
#[derive(Debug, Clone)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    /// The test environment's kubectl and admin kubeconfig.
    pub fn from_env() -> Kubectl {
        Kubectl {
            bin: crate::env("HOIST_TEST_KUBECTL").into(),
            kubeconfig: crate::env("HOIST_TEST_KUBECONFIG").into(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c
    }

    /// `kubectl ARGS`, nothing on stdin.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    /// `kubectl ARGS` with `input` on stdin (`apply -f -`).
    pub fn output_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write kubectl stdin");
        child.wait_with_output().expect("kubectl output")
    }

    fn success(args: &[&str], o: Output) -> String {
        assert!(
            o.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            show_output(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `kubectl ARGS`, which must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        Self::success(args, self.output(args))
    }

    /// [`Kubectl::ok`] with `input` on stdin.
    pub fn ok_with_input(&self, args: &[&str], input: &str) -> String {
        Self::success(args, self.output_with_input(args, input))
    }

    /// `kubectl ARGS -o json`.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl JSON")
    }

    /// Whether `kubectl get …` (`args`) finds the object; any error but NotFound
    /// fails.
    pub fn exists(&self, args: &[&str]) -> bool {
        let o = self.output(args);
        if o.status.success() {
            return true;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("NotFound"),
            "kubectl {}: {}",
            args.join(" "),
            show_output(&o)
        );
        false
    }

    /// `Kind/name` of the objects of `kinds` (comma-separated) in `ns` matching
    /// `selector`.
    pub fn names(&self, ns: &str, kinds: &str, selector: &str) -> Vec<String> {
        let v = self.json(&["-n", ns, "get", kinds, "-l", selector]);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    /// Waits until nothing of `kinds` in `ns` matches `selector`.
    pub fn wait_none(&self, ns: &str, kinds: &str, selector: &str) {
        let t0 = Instant::now();
        loop {
            let left = self.names(ns, kinds, selector);
            if left.is_empty() {
                return;
            }
            assert!(
                t0.elapsed() < LONG,
                "still there after {LONG:?} ({selector} in {ns}): {left:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// What hoist may create for a run: [`Kubectl::wait_none`] of these kinds says that
/// nothing of it is left.
pub const RUN_KINDS: &str = "jobs,pods,secrets,configmaps";

/// A namespace of one test, created with a [`unique`] name (once its default service
/// account, which pods need to be admitted, exists) and deleted when dropped, whatever
/// the test's outcome.
#[derive(Debug)]
pub struct TestNamespace {
    pub kubectl: Kubectl,
    pub name: String,
}

impl TestNamespace {
    pub fn create(prefix: &str) -> TestNamespace {
        let kubectl = Kubectl::from_env();
        let name = unique(prefix);
        kubectl.ok(&["create", "namespace", &name]);
        crate::wait_until(
            &format!("the default service account of {name}"),
            LONG,
            || {
                kubectl
                    .output(&["-n", &name, "get", "serviceaccount", "default"])
                    .status
                    .success()
            },
        );
        TestNamespace { kubectl, name }
    }

    /// Waits until nothing of run `id` is left in the namespace ([`RUN_KINDS`]).
    pub fn wait_run_gone(&self, id: &str) {
        self.kubectl
            .wait_none(&self.name, RUN_KINDS, &format!("hoist.dev/run-id={id}"));
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = self
            .kubectl
            .output(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

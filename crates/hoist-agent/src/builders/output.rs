//! What a build's output says, line by line, whatever the engine: the Dockerfile step
//! running (to name the one that failed), the last lines (for the failure report), and
//! for the Docker daemon the images the steps committed.
//!
//! The step formats recognised:
//! - Docker's classic builder: `Step 2/3 : RUN pip install -r requirements.txt`;
//! - Kaniko: `INFO[0003] RUN pip install -r requirements.txt` (an instruction after
//!   the log prefix);
//! - Buildah: `STEP 2/3: RUN pip install -r requirements.txt`, and on failure
//!   `Error: building at STEP "RUN pip install …": …`.

use std::collections::VecDeque;

use crate::logs::{LogSink, TAIL_LINES};

/// The last [`TAIL_LINES`] lines of some output.
#[derive(Debug, Default)]
pub(crate) struct Tail(VecDeque<String>);

impl Tail {
    pub(crate) fn push(&mut self, line: String) {
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }

    pub(crate) fn last(&self) -> Option<&str> {
        self.0.back().map(String::as_str)
    }

    pub(crate) fn into_vec(self) -> Vec<String> {
        self.0.into()
    }
}

/// Dockerfile instructions, as kaniko logs them before running each.
const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A build's output, parsed line by line.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    partial: String,
    pub(crate) tail: Tail,
    /// The step running (the last one started), as written in the Dockerfile.
    pub(crate) step: Option<String>,
    /// Images committed by the Docker daemon's steps (` ---> <id>`), in order.
    pub(crate) layers: Vec<String>,
}

impl Progress {
    /// Takes a chunk of output (lines may be cut anywhere); each complete line goes to
    /// `logs` on the system stream and is parsed.
    pub(crate) fn feed(&mut self, chunk: &str, logs: &LogSink) {
        self.partial.push_str(chunk);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.line(line.trim_end_matches(['\n', '\r']), logs);
        }
    }

    /// The rest of the output, after its last newline.
    pub(crate) fn finish(&mut self, logs: &LogSink) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(rest.trim_end_matches('\r'), logs);
        }
    }

    fn line(&mut self, line: &str, logs: &LogSink) {
        if line.trim().is_empty() {
            return;
        }
        logs.system(line);
        self.observe(line);
    }

    /// Parses one line that is already in the run's logs.
    pub(crate) fn observe(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        self.tail.push(line.to_string());
        if let Some(step) = step_of(line) {
            self.step = Some(step);
        } else if let Some(id) = line.trim().strip_prefix("---> ")
            && !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            self.layers.push(id.to_string());
        }
    }
}

/// The Dockerfile step a line starts or names as failed, in any engine's format.
fn step_of(line: &str) -> Option<String> {
    let t = line.trim();
    // Docker: `Step 2/3 : RUN x`.
    if let Some(rest) = t.strip_prefix("Step ")
        && let Some((_, step)) = rest.split_once(" : ")
    {
        return Some(step.trim().to_string());
    }
    // Buildah: `STEP 2/3: RUN x`, and `Error: building at STEP "RUN x": …`.
    if let Some(rest) = t.strip_prefix("STEP ")
        && let Some((n, step)) = rest.split_once(": ")
        && n.bytes().all(|b| b.is_ascii_digit() || b == b'/')
    {
        return Some(step.trim().to_string());
    }
    if let Some(rest) = t.split_once("building at STEP \"").map(|(_, r)| r)
        && let Some((step, _)) = rest.rsplit_once("\": ")
    {
        return Some(step.replace("\\\"", "\""));
    }
    // Kaniko: `INFO[0003] RUN x`.
    if let Some(rest) = t.strip_prefix("INFO[")
        && let Some((_, msg)) = rest.split_once("] ")
    {
        let msg = msg.trim();
        let word = msg.split_whitespace().next().unwrap_or("");
        if INSTRUCTIONS.contains(&word) && msg.len() > word.len() {
            return Some(msg.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_output_is_split_into_lines_and_steps_found() {
        let logs = LogSink::new();
        let mut p = Progress::default();
        p.feed(
            "Step 1/3 : FROM busybox\n ---> 0e4e07ceef21\nStep 2/3 : RUN echo",
            &logs,
        );
        p.feed(" hi && exit 3\n ---> Running in 7c3d\nhi\n", &logs);
        p.feed("partial", &logs);
        p.finish(&logs);
        assert_eq!(p.step.as_deref(), Some("RUN echo hi && exit 3"));
        assert_eq!(p.layers, ["0e4e07ceef21"]);
        let lines: Vec<String> = logs.snapshot().into_iter().map(|l| l.text).collect();
        assert_eq!(
            lines,
            [
                "Step 1/3 : FROM busybox",
                " ---> 0e4e07ceef21",
                "Step 2/3 : RUN echo hi && exit 3",
                " ---> Running in 7c3d",
                "hi",
                "partial"
            ]
        );
    }

    /// Output as kaniko v1.23 writes it for a failing `RUN`.
    #[test]
    fn kaniko_steps_are_found() {
        let mut p = Progress::default();
        for l in [
            "INFO[0000] Retrieving image manifest 127.0.0.1:5000/busybox:latest",
            "INFO[0000] Built cross stage deps: map[]",
            "INFO[0001] COPY app.py /app/",
            "INFO[0001] Taking snapshot of files...",
            "INFO[0001] RUN python -c 'import sys; sys.exit(3)'",
            "INFO[0001] Cmd: /bin/sh",
            "INFO[0001] Args: [-c python -c 'import sys; sys.exit(3)']",
            "INFO[0001] Running: [/bin/sh -c python -c 'import sys; sys.exit(3)']",
            "error building image: error building stage: failed to execute command: waiting for process to exit: exit status 3",
        ] {
            p.observe(l);
        }
        assert_eq!(
            p.step.as_deref(),
            Some("RUN python -c 'import sys; sys.exit(3)'")
        );
        assert!(p.tail.last().unwrap().starts_with("error building image"));
        assert!(p.layers.is_empty());
    }

    /// Output as buildah 1.28 (Debian 12) writes it for a failing `RUN`.
    #[test]
    fn buildah_steps_are_found() {
        let mut p = Progress::default();
        p.observe("STEP 1/3: FROM 127.0.0.1:5000/hoist-test/busybox:latest");
        p.observe("STEP 2/3: COPY app.py /app/");
        assert_eq!(p.step.as_deref(), Some("COPY app.py /app/"));
        p.observe("STEP 3/3: RUN echo \"a: b\" && exit 3");
        p.observe("a: b");
        assert_eq!(p.step.as_deref(), Some("RUN echo \"a: b\" && exit 3"));
        p.observe(
            "Error: building at STEP \"RUN echo \\\"a: b\\\" && exit 3\": while running runtime: exit status 3",
        );
        assert_eq!(p.step.as_deref(), Some("RUN echo \"a: b\" && exit 3"));
    }

    #[test]
    fn lines_that_only_look_like_steps_are_not() {
        for l in [
            "INFO[0000] Retrieving image manifest x",
            "INFO[0001] RUN",
            "STEPS 1/2: RUN x",
            "STEP one: RUN x",
            "Stepping 1 : x",
        ] {
            assert_eq!(step_of(l), None, "{l}");
        }
    }

    #[test]
    fn the_tail_is_bounded() {
        let mut t = Tail::default();
        for i in 0..100 {
            t.push(i.to_string());
        }
        let v = t.into_vec();
        assert_eq!(v.len(), TAIL_LINES);
        assert_eq!(v.last().map(String::as_str), Some("99"));
    }
}

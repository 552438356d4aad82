//! Where a re-adopted run's log resumes: which of the lines a runner reads again the
//! server already has.
//!
//! The run task reads the server's copy back from its end ([`TailScan`]) and hands the
//! runner a [`LogResume`]; the runner asks it, line by line in each stream's order,
//! whether to skip ([`LogResume::skip`]).
//!
//! The server keeps timestamps to the millisecond, a runner's are finer (Docker's and
//! the kubelet's are nanoseconds): the last stored line only says in which millisecond
//! it was written, so the resume point of a stream is that millisecond and how many of
//! its lines the server holds from it.
//!
//! A run whose output comes from several sources at once (the containers of a
//! Kubernetes run's pods) writes each line as `[source] text`
//! ([`crate::logs::source_prefix`]); its sources are followed apart, each as fast as it
//! goes, so one may have shipped lines up to T while another shipped only up to T-5s.
//! The scan therefore also finds each source's own resume point
//! ([`LogResume::for_source`]); a runner whose lines carry no source uses the
//! stream-wide one.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use hoist_core::api::{LogStream, StoredLogLine};

use crate::logs::source_of;

/// Where one stream of a re-adopted run's log resumes: which of its lines the server
/// already has.
///
/// Lines stamped at or before `after` were shipped. The server keeps timestamps to the
/// millisecond, so its last line only tells in which millisecond that line was
/// written: of the lines stamped after `after` and before `until`, the first
/// `shipped` were shipped too, and the others were not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamResume {
    pub after: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub shipped: usize,
}

impl StreamResume {
    /// True when the next line (in the stream's order), stamped `ts`, was shipped.
    fn skip(&mut self, ts: DateTime<Utc>) -> bool {
        if self.after.is_some_and(|a| ts <= a) {
            return true;
        }
        if self.shipped > 0 && self.until.is_some_and(|u| ts < u) {
            self.shipped -= 1;
            return true;
        }
        false
    }
}

/// Where one source's streams resume (see [`LogResume::for_source`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceResume {
    pub stdout: StreamResume,
    pub stderr: StreamResume,
}

/// Where a re-adopted run's log resumes, per stream (each keeps its order; their
/// relative order is not kept by every runtime), and per source for runs whose lines
/// carry one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogResume {
    /// Every line of the stream, whatever its source.
    pub stdout: StreamResume,
    pub stderr: StreamResume,
    /// The sources the server's tail shows, each with its own resume point per stream.
    pub sources: BTreeMap<String, SourceResume>,
    /// Where a stream that the server's tail does not show resumes (a source that
    /// shipped nothing lately, or none yet).
    pub absent: StreamResume,
}

impl LogResume {
    /// Both streams (of every source) shipped up to and including the exact time
    /// `since`.
    pub fn after(since: Option<DateTime<Utc>>) -> LogResume {
        let s = StreamResume {
            after: since,
            ..StreamResume::default()
        };
        LogResume {
            stdout: s,
            stderr: s,
            sources: BTreeMap::new(),
            absent: s,
        }
    }

    /// The resume of the lines of one source (written `[source] text`): its own
    /// point per stream when the server's tail shows it, else [`LogResume::absent`].
    pub fn for_source(&self, source: &str) -> LogResume {
        let s = self.sources.get(source).copied().unwrap_or(SourceResume {
            stdout: self.absent,
            stderr: self.absent,
        });
        LogResume {
            stdout: s.stdout,
            stderr: s.stderr,
            sources: BTreeMap::new(),
            absent: self.absent,
        }
    }

    /// Nothing before this was shipped that is not skipped by time: where to start
    /// reading (`None`: from the beginning).
    pub fn from(&self) -> Option<DateTime<Utc>> {
        Some(self.stdout.after?.min(self.stderr.after?))
    }

    /// True when the next line of a stream (stdout when `!stderr`), stamped `ts`, was
    /// shipped already. Call it for every line, in the stream's order.
    pub fn skip(&mut self, ts: DateTime<Utc>, stderr: bool) -> bool {
        if stderr {
            self.stderr.skip(ts)
        } else {
            self.stdout.skip(ts)
        }
    }
}

/// The last millisecond of one stream seen so far, reading backwards.
#[derive(Debug, Clone, Copy, Default)]
struct Last {
    /// The newest line's time and how many lines (read so far) share it.
    newest: Option<(DateTime<Utc>, usize)>,
    /// A line of an earlier millisecond was read: the count is complete.
    done: bool,
}

impl Last {
    fn see(&mut self, ts: DateTime<Utc>) {
        if self.done {
            return;
        }
        match &mut self.newest {
            None => self.newest = Some((ts, 1)),
            Some((t, n)) if *t == ts => *n += 1,
            Some(_) => self.done = true,
        }
    }

    fn resume(&self, absent: StreamResume) -> StreamResume {
        match self.newest {
            Some((t, n)) => StreamResume {
                after: Some(t - TimeDelta::nanoseconds(1)),
                until: Some(t + TimeDelta::milliseconds(1)),
                shipped: n,
            },
            None => absent,
        }
    }
}

/// Works out a [`LogResume`] from a run's stored log, read back page by page from its
/// end: per stream, the time of the last line and how many lines of that stream the
/// server holds from that same millisecond; the same per source (`[source] text`).
#[derive(Debug, Default)]
pub struct TailScan {
    /// stdout, stderr.
    streams: [Last; 2],
    sources: BTreeMap<String, [Last; 2]>,
    /// The oldest job line read back.
    oldest: Option<DateTime<Utc>>,
}

impl TailScan {
    /// The next page back, its lines in the log's order.
    pub fn page(&mut self, lines: &[StoredLogLine]) {
        for l in lines.iter().rev() {
            let i = match l.stream {
                LogStream::Stdout => 0,
                LogStream::Stderr => 1,
                LogStream::System => continue,
            };
            self.oldest = Some(l.ts);
            self.streams[i].see(l.ts);
            if let Some(source) = source_of(&l.text) {
                match self.sources.get_mut(source) {
                    Some(s) => s[i].see(l.ts),
                    None => {
                        let mut s = [Last::default(); 2];
                        s[i].see(l.ts);
                        self.sources.insert(source.to_string(), s);
                    }
                }
            }
        }
    }

    /// True when reading further back changes nothing: both streams and every stream
    /// of a source seen so far have their last millisecond counted.
    pub fn done(&self) -> bool {
        self.streams.iter().all(|l| l.done)
            && self
                .sources
                .values()
                .flatten()
                .all(|l| l.done || l.newest.is_none())
    }

    /// The resume. `reached_start`: the whole log was read back.
    ///
    /// A stream (of a source) not in the lines read back, while others are: nothing of
    /// it was shipped since the oldest of them; what came well before would have been
    /// shipped with it (and is in the log, before them, when it was not all read back).
    pub fn finish(self, reached_start: bool) -> LogResume {
        let absent = StreamResume {
            after: self.oldest.map(|t| {
                t - if reached_start {
                    TimeDelta::seconds(1)
                } else {
                    TimeDelta::nanoseconds(1)
                }
            }),
            ..StreamResume::default()
        };
        LogResume {
            stdout: self.streams[0].resume(absent),
            stderr: self.streams[1].resume(absent),
            sources: self
                .sources
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        SourceResume {
                            stdout: s[0].resume(absent),
                            stderr: s[1].resume(absent),
                        },
                    )
                })
                .collect(),
            absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + n).unwrap()
    }

    fn ns(n: i64, sub: i64) -> DateTime<Utc> {
        ms(n) + TimeDelta::nanoseconds(sub)
    }

    /// A stored line (its time cut to the millisecond, as the server keeps it).
    fn stored(ts: DateTime<Utc>, stream: LogStream, text: &str) -> StoredLogLine {
        StoredLogLine {
            offset: 0,
            ts: DateTime::<Utc>::from_timestamp_millis(ts.timestamp_millis()).unwrap(),
            stream,
            text: text.into(),
        }
    }

    fn out(ts: DateTime<Utc>, text: &str) -> StoredLogLine {
        stored(ts, LogStream::Stdout, text)
    }

    fn scan(pages: &[&[StoredLogLine]], reached_start: bool) -> LogResume {
        let mut s = TailScan::default();
        for p in pages {
            s.page(p);
        }
        s.finish(reached_start)
    }

    #[test]
    fn resume_skips_what_the_server_has() {
        // The server holds stdout up to two lines stamped in millisecond 5, stderr
        // nothing.
        let mut r = LogResume {
            stdout: StreamResume {
                after: Some(ms(5) - TimeDelta::nanoseconds(1)),
                until: Some(ms(6)),
                shipped: 2,
            },
            ..LogResume::default()
        };
        assert_eq!(r.from(), None, "stderr is read from the start");
        assert!(r.skip(ns(4, 900_000), false));
        assert!(r.skip(ns(5, 100), false));
        assert!(r.skip(ns(5, 200), false));
        assert!(!r.skip(ns(5, 300), false), "the third line of ms 5 is new");
        assert!(!r.skip(ns(7, 0), false));
        assert!(!r.skip(ns(1, 0), true));
        // An exact time: that line and those before it, of every source.
        let mut r = LogResume::after(Some(ns(5, 100)));
        assert_eq!(r.from(), Some(ns(5, 100)));
        assert!(r.skip(ns(5, 100), true));
        assert!(!r.skip(ns(5, 101), false));
        let mut a = r.for_source("p/a");
        assert!(a.skip(ns(5, 100), false));
        assert!(!a.skip(ns(5, 101), false));
    }

    /// Two sources, one behind the other: the server has `a` up to ms 10000 and `b`
    /// only up to ms 5000. `b`'s lines in between that were not shipped are shipped on
    /// resume (the stream-wide point would skip them), and what each already shipped
    /// is skipped.
    #[test]
    fn each_source_resumes_after_its_own_last_line() {
        let log = [
            out(ns(1000, 5), "[p/a] a0"),
            out(ns(1000, 9), "[p/b] b0"),
            out(ns(5000, 1), "[p/b] b1"),
            out(ns(5000, 2), "[p/a] a1"),
            out(ns(10_000, 3), "[p/a] a2"),
        ];
        let r = scan(&[&log], true);
        assert_eq!(r.stdout.after, Some(ms(10_000) - TimeDelta::nanoseconds(1)));
        let mut b = r.for_source("p/b");
        assert!(b.skip(ns(1000, 9), false), "b0 was shipped");
        assert!(b.skip(ns(5000, 1), false), "b1 was shipped");
        assert!(!b.skip(ns(7000, 0), false), "b2 (7 s) was not");
        assert!(!b.skip(ns(9999, 0), false), "b3 (9.999 s) was not");
        let mut whole = r.clone();
        assert!(
            whole.skip(ns(7000, 0), false),
            "the stream-wide point would have lost b2"
        );
        let mut a = r.for_source("p/a");
        assert!(a.skip(ns(5000, 2), false));
        assert!(a.skip(ns(10_000, 3), false), "a2 was shipped");
        assert!(!a.skip(ns(10_000, 700), false), "a line after a2 in its ms");
    }

    /// Lines of several sources in one millisecond: each source counts its own, so a
    /// line of `b` in that millisecond that was not shipped is not taken for one of
    /// `a`'s that was, and the reverse.
    #[test]
    fn same_millisecond_lines_are_counted_per_source() {
        let log = [
            out(ns(1, 0), "[p/a] old"),
            out(ns(10, 100), "[p/a] a1"),
            out(ns(10, 200), "[p/b] b1"),
            out(ns(10, 300), "[p/a] a2"),
        ];
        let r = scan(&[&log], false);
        assert_eq!(r.stdout.shipped, 3, "stream-wide: three lines in ms 10");
        let mut a = r.for_source("p/a");
        assert_eq!(a.stdout.shipped, 2);
        assert!(a.skip(ns(10, 100), false));
        assert!(a.skip(ns(10, 300), false));
        assert!(
            !a.skip(ns(10, 900), false),
            "a's third line of ms 10 is new"
        );
        let mut b = r.for_source("p/b");
        assert_eq!(b.stdout.shipped, 1);
        assert!(b.skip(ns(10, 200), false));
        assert!(
            !b.skip(ns(10, 400), false),
            "b's second line of ms 10 is new"
        );
        // Stream-wide, the same lines in another order lose b's new line.
        let mut whole = r.clone();
        assert!(whole.skip(ns(10, 100), false));
        assert!(whole.skip(ns(10, 200), false));
        assert!(whole.skip(ns(10, 400), false));
    }

    /// A source (or a stream of one) the tail does not show resumes by the absent
    /// rule: after the oldest line read back, a second earlier when the whole log was
    /// read.
    #[test]
    fn absent_sources_resume_by_the_absent_rule() {
        let log = [out(ns(2000, 0), "[p/a] a0"), out(ns(3000, 0), "[p/a] a1")];
        let partial = scan(&[&log], false);
        let c = partial.for_source("q/c");
        assert_eq!(c.stdout.after, Some(ms(2000) - TimeDelta::nanoseconds(1)));
        assert_eq!(c.stdout, c.stderr);
        assert_eq!(
            partial.for_source("p/a").stderr,
            c.stderr,
            "a's stderr is absent too"
        );
        let whole = scan(&[&log], true);
        assert_eq!(
            whole.for_source("q/c").stdout.after,
            Some(ms(2000) - TimeDelta::seconds(1))
        );
        // Nothing read back: everything from the start.
        let empty = scan(&[], true);
        assert_eq!(empty, LogResume::default());
        assert_eq!(empty.for_source("p/a").from(), None);
    }

    /// Lines without a source (a one-source run, the rest of a split long line) count
    /// for the stream only; system lines count for nothing; pages read back one by one
    /// give what one page gives.
    #[test]
    fn pages_and_lines_without_a_source() {
        let old = [
            out(ns(1, 0), "[p/b] b0"),
            stored(ns(2, 0), LogStream::Stderr, "[p/a] e0"),
        ];
        let new = [
            out(ns(3, 0), "[p/a] a0"),
            out(ns(3, 0), "rest of a0"),
            stored(ns(4, 0), LogStream::System, "[hoist: note]"),
            out(ns(5, 0), "[INFO] from a one-source run"),
            stored(ns(6, 0), LogStream::Stderr, "[p/a] e1"),
        ];
        let mut s = TailScan::default();
        s.page(&new);
        s.page(&old);
        let paged = s.finish(true);
        let all: Vec<StoredLogLine> = old.iter().chain(new.iter()).cloned().collect();
        assert_eq!(paged, scan(&[&all], true));
        assert_eq!(paged.stdout.after, Some(ms(5) - TimeDelta::nanoseconds(1)));
        assert_eq!(paged.stdout.shipped, 1);
        assert_eq!(paged.stderr.after, Some(ms(6) - TimeDelta::nanoseconds(1)));
        let a = paged.for_source("p/a");
        assert_eq!(a.stdout.after, Some(ms(3) - TimeDelta::nanoseconds(1)));
        assert_eq!(a.stdout.shipped, 1, "the unprefixed rest is not a's");
        assert_eq!(a.stderr.after, Some(ms(6) - TimeDelta::nanoseconds(1)));
        // A bracketed word of a one-source run reads as a source too: such a run
        // never asks for it, and its stream-wide point is as without it.
        assert!(paged.sources.keys().eq(["INFO", "p/a", "p/b"]));
    }

    /// The scan is done once both streams, and every stream of a source seen, have a
    /// line of an earlier millisecond than their last: reading further back would
    /// change nothing.
    #[test]
    fn the_scan_is_done_when_every_source_seen_is_counted() {
        let mut s = TailScan::default();
        s.page(&[
            out(ns(2, 0), "[p/a] a1"),
            stored(ns(2, 0), LogStream::Stderr, "e1"),
        ]);
        assert!(!s.done());
        s.page(&[
            out(ns(1, 0), "x"),
            stored(ns(1, 0), LogStream::Stderr, "e0"),
        ]);
        assert!(!s.done(), "p/a's stdout has no earlier millisecond yet");
        s.page(&[out(ns(0, 0), "[p/a] a0")]);
        assert!(s.done());
    }
}

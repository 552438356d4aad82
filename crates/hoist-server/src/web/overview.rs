//! The overview (`/`): where things stand, as pictures. Three charts drawn here as
//! SVG (no script, no inline style: classes of `hoist.css`), each with a title, axis
//! labels, a legend, an accessible `<title>`/`<desc>` and a table of its numbers
//! under `<details>`:
//! 1. runs launched per hour, stacked by the state group they are in now;
//! 2. queue wait (launch to start) p50/p95 per queue, the longest first;
//! 3. run durations (start to end), a histogram over log-spaced buckets.
//!
//! The numbers come from `GET /api/v1/stats/overview` (`api::stats::overview`, called
//! in-process with the session's user), so a user sees only their entities' runs.

use std::fmt;

use askama::Template;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::get;
use hoist_core::api::{GroupCounts, OverviewStats, QueueWait, StateGroup};
use serde::Deserialize;

use super::view::{Base, Ts, duration};
use super::{WebError, WebResult, WebUser, page};
use crate::api::stats::{self, OverviewParams};
use crate::api::{AppState, Query};
use crate::auth::User;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(overview))
}

/// A coordinate or length in an SVG attribute, to one decimal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct N(pub f64);

impl fmt::Display for N {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}", self.0)
    }
}

/// A rectangle of a chart, with its tooltip.
#[derive(Debug, Clone)]
pub struct Bar {
    pub x: N,
    pub y: N,
    pub w: N,
    pub h: N,
    /// `bar-queued` … `bar-off`, `p50`, `p95`.
    pub class: &'static str,
    pub title: String,
}

/// An axis tick: where, and its label.
#[derive(Debug, Clone)]
pub struct Tick {
    pub at: N,
    pub label: String,
}

/// A legend entry: the swatch's class (`st-*`, `p50`, `p95`) and its label.
#[derive(Debug, Clone)]
pub struct Key {
    pub class: &'static str,
    pub label: &'static str,
}

// Geometry shared by the charts (the viewBox is 640 wide; CSS scales it).
const LEFT: f64 = 52.0;
const RIGHT: f64 = 628.0;
const TOP: f64 = 12.0;

/// Runs per hour, stacked by state group.
pub struct RunsChart {
    pub height: N,
    /// Bottom of the plot (the x axis).
    pub base: N,
    pub bars: Vec<Bar>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub keys: Vec<Key>,
    pub rows: Vec<RunsRow>,
    pub total: u64,
    pub desc: String,
}

pub struct RunsRow {
    pub hour: String,
    /// In [`StateGroup::ALL`] order.
    pub counts: Vec<u64>,
    pub total: u64,
}

/// Queue waits p50/p95, one row per queue (the longest waits first).
pub struct WaitsChart {
    pub height: N,
    pub base: N,
    pub rows: Vec<WaitRow>,
    pub x_ticks: Vec<Tick>,
    pub keys: Vec<Key>,
    /// Every queue with started runs (the table), longest p95 first.
    pub table: Vec<WaitCells>,
    /// Queues drawn (at most [`MAX_WAIT_ROWS`]) and in all.
    pub shown: usize,
    pub desc: String,
}

pub struct WaitRow {
    /// `entity/queue`, cut to fit.
    pub label: String,
    pub full: String,
    pub text_y: N,
    pub p95: Bar,
    pub p50: Bar,
    /// Where the p95 value is written.
    pub value_x: N,
    pub value: String,
}

pub struct WaitCells {
    pub queue: String,
    pub started: u64,
    pub p50: String,
    pub p95: String,
}

/// Run durations: a histogram over log-spaced buckets.
pub struct DurationsChart {
    pub height: N,
    pub base: N,
    pub bars: Vec<Bar>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub keys: Vec<Key>,
    pub rows: Vec<DurationCells>,
    pub total: u64,
    pub desc: String,
}

pub struct DurationCells {
    pub range: String,
    pub runs: u64,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    base: Base,
    hours: u32,
    window: String,
    /// The window choices: (hours, label, aria-current).
    windows: Vec<(u32, &'static str, &'static str)>,
    at: Ts,
    totals: GroupCounts,
    launched: u64,
    runs: RunsChart,
    waits: WaitsChart,
    durations: DurationsChart,
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    hours: Option<String>,
}

async fn overview(State(s): State<AppState>, who: WebUser, RawQuery(raw): RawQuery) -> WebResult {
    let q: PageQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| WebError::BadInput(format!("the address's query is not valid: {e}")))?;
    let hours = match q.hours.as_deref().map(str::trim) {
        None | Some("") => 24,
        Some(h) => h.parse::<u32>().map_err(|_| {
            WebError::BadInput(format!(
                "hours must be a whole number of hours (1 to {}), not {h:?}",
                stats::MAX_HOURS
            ))
        })?,
    };
    let st = stats::overview(
        State(s),
        User(who.user.clone()),
        Query(OverviewParams { hours: Some(hours) }),
    )
    .await?
    .0;
    let window = window_label(hours);
    let mut totals = GroupCounts::default();
    for h in &st.hours {
        for g in StateGroup::ALL {
            totals.add(g, h.runs.get(g));
        }
    }
    page(&Overview {
        base: Base::new(&who, "overview", "Overview"),
        hours,
        windows: [(6, "6 h"), (24, "24 h"), (72, "3 d"), (168, "7 d")]
            .into_iter()
            .map(|(h, l)| (h, l, if h == hours { "page" } else { "false" }))
            .collect(),
        at: Ts(st.at.timestamp_millis()),
        launched: totals.total(),
        totals,
        runs: runs_chart(&st, &window),
        waits: waits_chart(&st.queue_waits, &window),
        durations: durations_chart(&st, &window),
        window,
    })
}

/// "the last 24 hours", "the last 7 days".
fn window_label(hours: u32) -> String {
    match hours {
        1 => "this hour".into(),
        h if h % 24 == 0 && h > 24 => format!("the last {} days", h / 24),
        h => format!("the last {h} hours"),
    }
}

fn group_label(g: StateGroup) -> &'static str {
    match g {
        StateGroup::Queued => "waiting (queued, claimed)",
        StateGroup::Active => "active (building, starting, running, stopping)",
        StateGroup::Ok => "finished",
        StateGroup::Bad => "failed or unknown",
        StateGroup::Off => "stopped or cancelled",
    }
}

fn group_short(g: StateGroup) -> &'static str {
    match g {
        StateGroup::Queued => "waiting",
        StateGroup::Active => "active",
        StateGroup::Ok => "finished",
        StateGroup::Bad => "failed",
        StateGroup::Off => "stopped/cancelled",
    }
}

fn bar_class(g: StateGroup) -> &'static str {
    match g {
        StateGroup::Queued => "bar-queued",
        StateGroup::Active => "bar-active",
        StateGroup::Ok => "bar-ok",
        StateGroup::Bad => "bar-bad",
        StateGroup::Off => "bar-off",
    }
}

fn swatch_class(g: StateGroup) -> &'static str {
    match g {
        StateGroup::Queued => "st-queued",
        StateGroup::Active => "st-active",
        StateGroup::Ok => "st-ok",
        StateGroup::Bad => "st-bad",
        StateGroup::Off => "st-off",
    }
}

/// The smallest of 1, 2, 5 × 10^k at least `x` (at least 1: counts are whole).
fn nice_step(x: f64) -> f64 {
    if x <= 1.0 {
        return 1.0;
    }
    let mag = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|v| *v >= x)
        .unwrap_or(10.0 * mag)
}

/// A count axis from 0 to at least `max` in about four steps: (top, ticks as values).
fn count_axis(max: u64) -> (f64, Vec<u64>) {
    let step = nice_step(max.max(1) as f64 / 4.0);
    let top = (max.max(1) as f64 / step).ceil() * step;
    let ticks = (0..)
        .map(|i| (i as f64 * step) as u64)
        .take_while(|v| *v as f64 <= top)
        .collect();
    (top, ticks)
}

fn hour_label(t: chrono::DateTime<chrono::Utc>, with_day: bool) -> String {
    if with_day {
        t.format("%b %-d %H:00").to_string()
    } else {
        t.format("%H:00").to_string()
    }
}

fn runs_chart(st: &OverviewStats, window: &str) -> RunsChart {
    let height = 250.0;
    let base = 200.0;
    let n = st.hours.len().max(1);
    let with_day = n > 24;
    let max = st.hours.iter().map(|h| h.runs.total()).max().unwrap_or(0);
    let (top, ticks) = count_axis(max);
    let band = (RIGHT - LEFT) / n as f64;
    let bar_w = (band * 0.8).max(1.0);
    let y = |v: f64| base - v / top * (base - TOP);
    let mut bars = Vec::new();
    let mut rows = Vec::new();
    for (i, h) in st.hours.iter().enumerate() {
        let x = LEFT + i as f64 * band + (band - bar_w) / 2.0;
        let label = hour_label(h.start, with_day);
        let mut acc = 0u64;
        for g in StateGroup::ALL {
            let c = h.runs.get(g);
            if c == 0 {
                continue;
            }
            let (y0, y1) = (y(acc as f64), y((acc + c) as f64));
            bars.push(Bar {
                x: N(x),
                y: N(y1),
                w: N(bar_w),
                h: N((y0 - y1).max(0.5)),
                class: bar_class(g),
                title: format!("{label} UTC: {c} {}", group_short(g)),
            });
            acc += c;
        }
        rows.push(RunsRow {
            hour: format!("{label} UTC"),
            counts: StateGroup::ALL.iter().map(|g| h.runs.get(*g)).collect(),
            total: h.runs.total(),
        });
    }
    let every = n.div_ceil(8).max(1);
    let x_ticks = st
        .hours
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, h)| Tick {
            at: N(LEFT + (i as f64 + 0.5) * band),
            label: hour_label(h.start, with_day),
        })
        .collect();
    let y_ticks = ticks
        .into_iter()
        .map(|v| Tick {
            at: N(y(v as f64)),
            label: v.to_string(),
        })
        .collect();
    let total: u64 = st.hours.iter().map(|h| h.runs.total()).sum();
    let mut totals = GroupCounts::default();
    for h in &st.hours {
        for g in StateGroup::ALL {
            totals.add(g, h.runs.get(g));
        }
    }
    let parts: Vec<String> = StateGroup::ALL
        .iter()
        .map(|g| format!("{} {}", totals.get(*g), group_short(*g)))
        .collect();
    RunsChart {
        height: N(height),
        base: N(base),
        bars,
        y_ticks,
        x_ticks,
        keys: StateGroup::ALL
            .iter()
            .map(|g| Key {
                class: swatch_class(*g),
                label: group_label(*g),
            })
            .collect(),
        rows,
        total,
        desc: format!(
            "{total} runs launched in {window}, by hour and by the state they are in now: {}. The busiest hour had {max}.",
            parts.join(", ")
        ),
    }
}

/// Most queues drawn in the waits chart (the table lists them all).
pub const MAX_WAIT_ROWS: usize = 12;
/// The waits chart's log axis: its ticks (ms, label).
const WAIT_TICKS: [(i64, &str); 9] = [
    (100, "0.1 s"),
    (1_000, "1 s"),
    (10_000, "10 s"),
    (60_000, "1 min"),
    (600_000, "10 min"),
    (3_600_000, "1 h"),
    (21_600_000, "6 h"),
    (86_400_000, "1 d"),
    (604_800_000, "7 d"),
];

/// `entity/queue` cut to `max` characters (with an ellipsis).
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn waits_chart(waits: &[QueueWait], window: &str) -> WaitsChart {
    let mut sorted: Vec<&QueueWait> = waits.iter().collect();
    sorted.sort_by(|a, b| {
        b.p95_ms
            .cmp(&a.p95_ms)
            .then(b.p50_ms.cmp(&a.p50_ms))
            .then_with(|| (&a.entity, &a.queue).cmp(&(&b.entity, &b.queue)))
    });
    let left = 176.0;
    let right = 570.0;
    let row_h = 26.0;
    let shown = sorted.len().min(MAX_WAIT_ROWS);
    let base = TOP + row_h * shown.max(1) as f64 + 4.0;
    let height = base + 40.0;
    let lo = WAIT_TICKS[0].0 as f64;
    let max = sorted.iter().map(|q| q.p95_ms).max().unwrap_or(0);
    let hi = WAIT_TICKS
        .iter()
        .map(|(v, _)| *v)
        .find(|v| *v >= max && *v >= 10_000)
        .unwrap_or(WAIT_TICKS[WAIT_TICKS.len() - 1].0) as f64;
    let x = |ms: i64| {
        let v = (ms as f64).clamp(lo, hi);
        left + (v.ln() - lo.ln()) / (hi.ln() - lo.ln()) * (right - left)
    };
    let rows = sorted
        .iter()
        .take(shown)
        .enumerate()
        .map(|(i, q)| {
            let y0 = TOP + i as f64 * row_h;
            let full = format!("{}/{}", q.entity, q.queue);
            let (p50, p95) = (duration(q.p50_ms), duration(q.p95_ms));
            WaitRow {
                label: cut(&full, 26),
                text_y: N(y0 + 15.0),
                p95: Bar {
                    x: N(left),
                    y: N(y0 + 3.0),
                    w: N((x(q.p95_ms) - left).max(1.0)),
                    h: N(9.0),
                    class: "p95",
                    title: format!("{full}: p95 {p95} ({} started runs)", q.started),
                },
                p50: Bar {
                    x: N(left),
                    y: N(y0 + 13.0),
                    w: N((x(q.p50_ms) - left).max(1.0)),
                    h: N(9.0),
                    class: "p50",
                    title: format!("{full}: p50 {p50} ({} started runs)", q.started),
                },
                value_x: N(x(q.p95_ms) + 4.0),
                value: p95,
                full,
            }
        })
        .collect();
    let x_ticks = WAIT_TICKS
        .iter()
        .filter(|(v, _)| (*v as f64) <= hi)
        .map(|(v, l)| Tick {
            at: N(x(*v)),
            label: l.to_string(),
        })
        .collect();
    let table = sorted
        .iter()
        .map(|q| WaitCells {
            queue: format!("{}/{}", q.entity, q.queue),
            started: q.started,
            p50: duration(q.p50_ms),
            p95: duration(q.p95_ms),
        })
        .collect();
    let desc = match sorted.first() {
        Some(q) => format!(
            "Time from launch to start of the runs launched in {window}, per queue, the longest first ({shown} of {} queues drawn). Longest: {}/{} with p95 {} and p50 {}.",
            sorted.len(),
            q.entity,
            q.queue,
            duration(q.p95_ms),
            duration(q.p50_ms)
        ),
        None => format!("No run launched in {window} has started yet."),
    };
    WaitsChart {
        height: N(height),
        base: N(base),
        rows,
        x_ticks,
        keys: vec![
            Key {
                class: "p50",
                label: "p50 (median)",
            },
            Key {
                class: "p95",
                label: "p95",
            },
        ],
        table,
        shown,
        desc,
    }
}

/// A short label of a duration bucket's lower bound, for the axis.
fn bound_label(ms: i64) -> Option<&'static str> {
    Some(match ms {
        0 => "0",
        1_000 => "1 s",
        10_000 => "10 s",
        60_000 => "1 min",
        600_000 => "10 min",
        3_600_000 => "1 h",
        14_400_000 => "4 h",
        86_400_000 => "1 d",
        _ => return None,
    })
}

fn durations_chart(st: &OverviewStats, window: &str) -> DurationsChart {
    let height = 250.0;
    let base = 200.0;
    let first = st.durations.iter().position(|b| b.runs > 0);
    let last = st.durations.iter().rposition(|b| b.runs > 0);
    let shown: Vec<_> = match (first, last) {
        (Some(a), Some(b)) => st.durations[a..=b].iter().collect(),
        _ => vec![],
    };
    let max = shown.iter().map(|b| b.runs).max().unwrap_or(0);
    let (top, ticks) = count_axis(max);
    let n = shown.len().max(1);
    let band = (RIGHT - LEFT) / n as f64;
    let bar_w = (band * 0.86).max(1.0);
    let y = |v: f64| base - v / top * (base - TOP);
    let range = |from: i64, to: Option<i64>| match to {
        Some(to) => format!("{} – {}", duration(from), duration(to)),
        None => format!("{} or more", duration(from)),
    };
    let bars = shown
        .iter()
        .enumerate()
        .filter(|(_, b)| b.runs > 0)
        .map(|(i, b)| {
            let top_y = y(b.runs as f64);
            Bar {
                x: N(LEFT + i as f64 * band + (band - bar_w) / 2.0),
                y: N(top_y),
                w: N(bar_w),
                h: N((base - top_y).max(0.5)),
                class: "bar-ok",
                title: format!("{}: {} runs", range(b.from_ms, b.to_ms), b.runs),
            }
        })
        .collect();
    let x_ticks = shown
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            bound_label(b.from_ms).map(|l| Tick {
                at: N(LEFT + i as f64 * band),
                label: l.to_string(),
            })
        })
        .collect();
    let y_ticks = ticks
        .into_iter()
        .map(|v| Tick {
            at: N(y(v as f64)),
            label: v.to_string(),
        })
        .collect();
    let total: u64 = st.durations.iter().map(|b| b.runs).sum();
    let rows = shown
        .iter()
        .map(|b| DurationCells {
            range: range(b.from_ms, b.to_ms),
            runs: b.runs,
        })
        .collect();
    let desc = match shown.iter().max_by_key(|b| b.runs) {
        Some(b) => format!(
            "How long the {total} runs launched in {window} that ran and ended took from start to end, on a log scale; most took {}.",
            range(b.from_ms, b.to_ms)
        ),
        None => format!("No run launched in {window} has run and ended yet."),
    };
    DurationsChart {
        height: N(height),
        base: N(base),
        bars,
        y_ticks,
        x_ticks,
        keys: vec![Key {
            class: "st-ok",
            label: "runs that ran and ended (any outcome)",
        }],
        rows,
        total,
        desc,
    }
}

impl Overview {
    fn group_names(&self) -> Vec<&'static str> {
        StateGroup::ALL.iter().map(|g| group_short(*g)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_axes_are_round() {
        assert_eq!(count_axis(0), (1.0, vec![0, 1]));
        assert_eq!(count_axis(7), (8.0, vec![0, 2, 4, 6, 8]));
        assert_eq!(count_axis(4_321), (6_000.0, vec![0, 2_000, 4_000, 6_000]));
    }

    #[test]
    fn labels_are_cut() {
        assert_eq!(cut("team/queue", 26), "team/queue");
        assert_eq!(cut("abcdefghij", 5), "abcd…");
    }
}

//! The run lifecycle.
//!
//! ```text
//! queued ──► claimed ──► building ──► starting ──► running ──► finished | failed
//!   │           │            │            │           │
//!   │           │            └────────────┴───────────┴──► stopping ──► stopped
//!   ▼           ▼                                                    (or finished | failed)
//! cancelled  cancelled
//!
//! claimed, building ──► queued        (lease lapsed, released, agent shut down)
//! starting, running ──► queued        (preempted: bounded re-queues)
//! claimed, building, starting, running ──► failed;  claimed ... stopping ──► stopped
//! starting, running, stopping ──► unknown (agent lost) ──► running | stopping (re-adopted)
//!                                                     └──► finished | failed | stopped
//! ```
//!
//! [`check_transition`] is the single authority on which moves are legal and who may
//! make them; the server calls it for every state change, whoever asks. The tests below
//! state the same graph a second time, as a table, and check the two agree.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;
use utoipa::ToSchema;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Queued,
    Claimed,
    Building,
    Starting,
    Running,
    Stopping,
    Unknown,
    Finished,
    Failed,
    Stopped,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 11] = [
        RunState::Queued,
        RunState::Claimed,
        RunState::Building,
        RunState::Starting,
        RunState::Running,
        RunState::Stopping,
        RunState::Unknown,
        RunState::Finished,
        RunState::Failed,
        RunState::Stopped,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Claimed => "claimed",
            RunState::Building => "building",
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Unknown => "unknown",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
            RunState::Stopped => "stopped",
            RunState::Cancelled => "cancelled",
        }
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Finished | RunState::Failed | RunState::Stopped | RunState::Cancelled
        )
    }

    /// States in which an agent holds the run (it was claimed and not yet ended).
    pub fn is_held_by_agent(self) -> bool {
        matches!(
            self,
            RunState::Claimed
                | RunState::Building
                | RunState::Starting
                | RunState::Running
                | RunState::Stopping
                | RunState::Unknown
        )
    }

    /// States in which something may already be executing outside hoist (a process, a
    /// container, a cloud job), so the run cannot simply be handed to another agent.
    pub fn may_be_executing(self) -> bool {
        matches!(
            self,
            RunState::Starting | RunState::Running | RunState::Stopping | RunState::Unknown
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown run state {0:?}; expected one of queued, claimed, building, starting, running, stopping, unknown, finished, failed, stopped, cancelled"
)]
pub struct ParseStateError(pub String);

impl FromStr for RunState {
    type Err = ParseStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseStateError(s.to_string()))
    }
}

/// Launch priority; only used for ordering when the queue has prioritization on.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    High,
    #[default]
    Medium,
    Low,
}

impl Priority {
    /// Sort key: lower is served first.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Medium => 2,
            Priority::Low => 3,
        }
    }
    pub fn from_rank(rank: i64) -> Option<Priority> {
        Some(match rank {
            0 => Priority::Critical,
            1 => Priority::High,
            2 => Priority::Medium,
            3 => Priority::Low,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "critical" => Priority::Critical,
            "high" => Priority::High,
            "medium" => Priority::Medium,
            "low" => Priority::Low,
            _ => {
                return Err(format!(
                    "unknown priority {s:?}; expected critical, high, medium or low"
                ));
            }
        })
    }
}

/// Which part of the pipeline a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureStage {
    /// The agent could not prepare or submit the run (bad config, refused option,
    /// agent lost, agent restarted).
    Agent,
    /// The image build failed.
    Build,
    /// The job itself failed (non-zero exit, image missing, start timeout).
    Run,
}

impl fmt::Display for FailureStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureStage::Agent => "agent",
            FailureStage::Build => "build",
            FailureStage::Run => "run",
        })
    }
}

/// Who asks for a state change. Each actor may make only some moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// A person or script through the API (cancel, stop).
    User,
    /// The agent that holds the run.
    Agent,
    /// The server itself (claims, lease lapses, lost agents, grace periods).
    Server,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Actor::User => "user",
            Actor::Agent => "agent",
            Actor::Server => "server",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a run cannot go from {from} to {to} (requested by {actor}){hint}")]
pub struct IllegalTransition {
    pub from: RunState,
    pub to: RunState,
    pub actor: Actor,
    pub hint: &'static str,
}

/// Checks that `actor` may move a run from `from` to `to`.
pub fn check_transition(
    from: RunState,
    to: RunState,
    actor: Actor,
) -> Result<(), IllegalTransition> {
    use Actor::*;
    use RunState::*;
    let allowed = match (from, to) {
        // Claims and lease handling belong to the server.
        (Queued, Claimed) => actor == Server,
        (Claimed, Queued) | (Building, Queued) => matches!(actor, Server | Agent),
        // Cancelling: nothing has started yet.
        (Queued, Cancelled) | (Claimed, Cancelled) => actor == User,
        // The agent walks the run through its pipeline.
        (Claimed, Building) | (Claimed, Starting) | (Building, Starting) => actor == Agent,
        (Starting, Running) => actor == Agent,
        (Claimed | Building | Starting | Running, Failed) => matches!(actor, Agent | Server),
        (Starting | Running, Finished) => actor == Agent,
        // Preemption: the agent re-queues a run whose compute went away.
        (Running | Starting, Queued) => actor == Agent,
        // Stop requests.
        (Building | Starting | Running, Stopping) => matches!(actor, User | Agent),
        (Claimed | Building | Starting | Running | Stopping, Stopped) => actor == Agent,
        (Stopping, Finished | Failed) => actor == Agent,
        // Lost agents and re-adoption.
        (Starting | Running | Stopping, Unknown) => actor == Server,
        (Unknown, Running | Stopping) => actor == Agent,
        (Unknown, Finished | Stopped) => actor == Agent,
        (Unknown, Failed) => matches!(actor, Agent | Server),
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let hint = if from.is_terminal() {
        "; the run has already ended"
    } else if to == Cancelled && from.is_held_by_agent() {
        "; the run has started: stop it instead of cancelling it"
    } else if to == Stopping && matches!(from, Queued | Claimed) {
        "; the run has not started: cancel it instead of stopping it"
    } else {
        ""
    };
    Err(IllegalTransition {
        from,
        to,
        actor,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state() -> impl Strategy<Value = RunState> {
        proptest::sample::select(RunState::ALL.to_vec())
    }
    fn actor() -> impl Strategy<Value = Actor> {
        proptest::sample::select(vec![Actor::User, Actor::Agent, Actor::Server])
    }

    use Actor::{Agent, Server, User};
    use RunState::*;

    /// The lifecycle as documented (module docs, ARCHITECTURE.md): every legal move and
    /// who may make it. `check_transition` must accept exactly these.
    const GRAPH: &[(RunState, RunState, &[Actor])] = &[
        (Queued, Claimed, &[Server]),
        (Queued, Cancelled, &[User]),
        (Claimed, Queued, &[Server, Agent]),
        (Claimed, Cancelled, &[User]),
        (Claimed, Building, &[Agent]),
        (Claimed, Starting, &[Agent]),
        (Claimed, Failed, &[Agent, Server]),
        (Claimed, Stopped, &[Agent]),
        (Building, Queued, &[Server, Agent]),
        (Building, Starting, &[Agent]),
        (Building, Failed, &[Agent, Server]),
        (Building, Stopping, &[User, Agent]),
        (Building, Stopped, &[Agent]),
        (Starting, Running, &[Agent]),
        (Starting, Finished, &[Agent]),
        (Starting, Failed, &[Agent, Server]),
        (Starting, Queued, &[Agent]),
        (Starting, Stopping, &[User, Agent]),
        (Starting, Stopped, &[Agent]),
        (Starting, Unknown, &[Server]),
        (Running, Finished, &[Agent]),
        (Running, Failed, &[Agent, Server]),
        (Running, Queued, &[Agent]),
        (Running, Stopping, &[User, Agent]),
        (Running, Stopped, &[Agent]),
        (Running, Unknown, &[Server]),
        (Stopping, Stopped, &[Agent]),
        (Stopping, Finished, &[Agent]),
        (Stopping, Failed, &[Agent]),
        (Stopping, Unknown, &[Server]),
        (Unknown, Running, &[Agent]),
        (Unknown, Stopping, &[Agent]),
        (Unknown, Finished, &[Agent]),
        (Unknown, Stopped, &[Agent]),
        (Unknown, Failed, &[Agent, Server]),
    ];

    fn documented(from: RunState, to: RunState, who: Actor) -> bool {
        GRAPH
            .iter()
            .any(|(f, t, actors)| *f == from && *t == to && actors.contains(&who))
    }

    fn reachable_from(start: RunState) -> std::collections::HashSet<RunState> {
        let mut seen = std::collections::HashSet::from([start]);
        let mut todo = vec![start];
        while let Some(s) = todo.pop() {
            for (f, t, _) in GRAPH {
                if *f == s && seen.insert(*t) {
                    todo.push(*t);
                }
            }
        }
        seen
    }

    /// The table and `check_transition` agree on every (from, to, actor).
    #[test]
    fn check_transition_is_the_documented_graph() {
        for from in RunState::ALL {
            for to in RunState::ALL {
                for who in [User, Agent, Server] {
                    assert_eq!(
                        check_transition(from, to, who).is_ok(),
                        documented(from, to, who),
                        "{from} -> {to} by {who}"
                    );
                }
            }
        }
    }

    /// Every state can be reached from `queued`, and from every state that is not
    /// terminal some terminal state can be reached: no run can get stuck.
    #[test]
    fn no_unreachable_states_and_no_dead_ends() {
        let from_queued = reachable_from(Queued);
        for s in RunState::ALL {
            assert!(from_queued.contains(&s), "{s} unreachable from queued");
            if !s.is_terminal() {
                assert!(
                    reachable_from(s).iter().any(|t| t.is_terminal()),
                    "{s} cannot end"
                );
            }
        }
    }

    #[test]
    fn happy_path() {
        let path = [
            (RunState::Queued, RunState::Claimed, Actor::Server),
            (RunState::Claimed, RunState::Building, Actor::Agent),
            (RunState::Building, RunState::Starting, Actor::Agent),
            (RunState::Starting, RunState::Running, Actor::Agent),
            (RunState::Running, RunState::Finished, Actor::Agent),
        ];
        for (a, b, who) in path {
            check_transition(a, b, who).unwrap();
        }
    }

    #[test]
    fn hints() {
        let e = check_transition(RunState::Running, RunState::Cancelled, Actor::User).unwrap_err();
        assert!(e.to_string().contains("stop it instead"), "{e}");
        let e = check_transition(RunState::Finished, RunState::Running, Actor::Agent).unwrap_err();
        assert!(e.to_string().contains("already ended"), "{e}");
        let e = check_transition(RunState::Queued, RunState::Stopping, Actor::User).unwrap_err();
        assert!(e.to_string().contains("cancel it instead"), "{e}");
    }

    proptest! {
        /// Terminal states are absorbing, for everyone.
        #[test]
        fn terminal_is_absorbing(to in state(), who in actor()) {
            for from in RunState::ALL.into_iter().filter(|s| s.is_terminal()) {
                prop_assert!(check_transition(from, to, who).is_err());
            }
        }

        /// Users can only cancel or stop; they never drive a run forward.
        #[test]
        fn users_only_cancel_or_stop(from in state(), to in state()) {
            if check_transition(from, to, Actor::User).is_ok() {
                prop_assert!(matches!(to, RunState::Cancelled | RunState::Stopping));
            }
        }

        /// Only the server hands out runs.
        #[test]
        fn only_server_claims(from in state(), who in actor()) {
            if check_transition(from, RunState::Claimed, who).is_ok() {
                prop_assert_eq!(who, Actor::Server);
                prop_assert_eq!(from, RunState::Queued);
            }
        }

        /// No self-loops: every accepted transition changes the state.
        #[test]
        fn no_self_loops(s in state(), who in actor()) {
            prop_assert!(check_transition(s, s, who).is_err());
        }

        /// Any sequence of moves from `queued` is accepted exactly when the documented
        /// graph has that edge for that actor, visits only states reachable from `queued`,
        /// and never leaves a terminal state.
        #[test]
        fn random_walks(
            steps in proptest::collection::vec((state(), actor(), any::<bool>(), any::<u8>()), 0..60)
        ) {
            let reachable = reachable_from(RunState::Queued);
            let mut cur = RunState::Queued;
            let mut ended = false;
            for (to, who, follow, pick) in steps {
                // Half the steps follow a documented edge (so walks get deep), the others
                // try anything.
                let legal: Vec<(RunState, Actor)> = GRAPH
                    .iter()
                    .filter(|(f, _, _)| *f == cur)
                    .flat_map(|(_, t, actors)| actors.iter().map(move |a| (*t, *a)))
                    .collect();
                let (to, who) = if follow && !legal.is_empty() {
                    legal[pick as usize % legal.len()]
                } else {
                    (to, who)
                };
                let accepted = check_transition(cur, to, who).is_ok();
                prop_assert_eq!(accepted, documented(cur, to, who),
                    "{} -> {} by {}", cur, to, who);
                if accepted {
                    prop_assert!(!ended, "left terminal state {}", cur);
                    prop_assert!(reachable.contains(&to), "{} is not reachable", to);
                    cur = to;
                    ended = cur.is_terminal();
                }
            }
        }

        #[test]
        fn parse_roundtrip(s in state()) {
            prop_assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
        }
    }
}

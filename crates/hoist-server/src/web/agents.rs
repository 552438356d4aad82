//! Agents: every agent the user may see (as in a queue's Agents tab).

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use hoist_core::api::Agent;

use super::queues::{agent_class, ts};
use super::view::Base;
use super::{WebResult, WebUser, page};
use crate::api::AppState;
use crate::api::agents::list_agents;
use crate::auth::User;

pub fn routes() -> Router<AppState> {
    Router::new().route("/agents", get(agents_page))
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    base: Base,
    agents: Vec<Agent>,
}

async fn agents_page(State(s): State<AppState>, who: WebUser) -> WebResult {
    let mut agents = list_agents(State(s), User(who.user.clone())).await?.0;
    // Connected agents first, then by most recent heartbeat.
    agents.sort_by_key(|a| {
        (
            a.status.as_str() == "stopped" || a.status.as_str() == "lost",
            std::cmp::Reverse(a.last_heartbeat_at),
        )
    });
    page(&AgentsPage {
        base: Base::new(&who, "agents", "Agents"),
        agents,
    })
}

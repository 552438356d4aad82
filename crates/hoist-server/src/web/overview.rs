//! The overview (`/`): where things stand, as pictures.

use askama::Template;
use axum::Router;
use axum::routing::get;

use super::view::Base;
use super::{WebResult, WebUser, page};
use crate::api::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(overview))
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    base: Base,
}

async fn overview(who: WebUser) -> WebResult {
    page(&Overview {
        base: Base::new(&who, "overview", "Overview"),
    })
}

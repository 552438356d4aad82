//! `/api/v1/me`, `/users`, `/teams`, `/keys`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hoist_core::api::{
    AddMember, ApiKey, CreateApiKey, CreateTeam, CreateUser, CreatedApiKey, CreatedUser, ErrorBody,
    Me, Team, User as UserView,
};
use hoist_core::names;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Json, Query};
use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::store::agents::EndedSessions;

/// Wakes the agents whose sessions a revocation ended (their waiting claims answer
/// `session_ended` at once) and the queues that got runs back.
fn wake_ended(s: &AppState, ended: EndedSessions) {
    for a in &ended.agents {
        tracing::info!(message = "Agent session ended: its owner lost access.", agent = %a);
        s.dispatch.wake_agent(a);
    }
    for q in &ended.requeued_queues {
        s.dispatch.wake_queue(q);
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, delete_user))
        .routes(routes!(create_team, list_teams))
        .routes(routes!(get_team, delete_team))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

fn name_error(e: names::NameError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// Who the caller is and which entities they may use.
#[utoipa::path(get, path = "/api/v1/me", tag = "identity",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(State(s): State<AppState>, User(u): User) -> ApiResult<axum::Json<Me>> {
    let user = s
        .store
        .get_user(&u.name)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("the key's user no longer exists"))?;
    Ok(axum::Json(Me {
        user,
        entities: u.entities,
    }))
}

/// Create a user with a first API key (admins only). The key is shown once.
#[utoipa::path(post, path = "/api/v1/users", tag = "identity", request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(s): State<AppState>,
    User(u): User,
    Json(req): Json<CreateUser>,
) -> ApiResult<(StatusCode, axum::Json<CreatedUser>)> {
    u.require_admin("create users")?;
    names::validate("user", &req.name).map_err(name_error)?;
    let (user, api_key) = s
        .store
        .create_user(&req.name, req.admin, "initial", s.now())
        .await?;
    tracing::info!(message = "User created.", user = %user.name, admin = user.admin, by = %u.name);
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedUser { user, api_key }),
    ))
}

/// Users: all of them for admins, yourself otherwise.
#[utoipa::path(get, path = "/api/v1/users", tag = "identity",
    responses((status = 200, body = Vec<UserView>)))]
async fn list_users(
    State(s): State<AppState>,
    User(u): User,
) -> ApiResult<axum::Json<Vec<UserView>>> {
    let mut users = s.store.list_users().await?;
    if !u.admin {
        users.retain(|x| x.name == u.name);
    }
    Ok(axum::Json(users))
}

#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "identity",
    params(("name" = String, Path, description = "user name")),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(s): State<AppState>,
    User(u): User,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<UserView>> {
    let not_found = || ApiError::not_found(format!("no user named {name:?}"));
    if !u.admin && u.name != name {
        return Err(not_found());
    }
    Ok(axum::Json(
        s.store.get_user(&name).await?.ok_or_else(not_found)?,
    ))
}

/// Delete a user (admins only; not yourself). Their keys stop working, their agents'
/// sessions end, they leave their teams; the name stays reserved. Refused while the
/// user owns queues.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "identity",
    params(("name" = String, Path, description = "user name")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_user(
    State(s): State<AppState>,
    User(u): User,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    u.require_admin("delete users")?;
    if name == u.name {
        return Err(ApiError::bad_request(
            "you cannot delete yourself; ask another admin",
        ));
    }
    let ended = s.store.delete_user(&name, s.now()).await?;
    s.auth.forget_user(&name);
    s.cluster.flush().await;
    tracing::info!(message = "User deleted.", user = %name, by = %u.name);
    wake_ended(&s, ended);
    Ok(StatusCode::NO_CONTENT)
}

/// Create a team (admins only).
#[utoipa::path(post, path = "/api/v1/teams", tag = "identity", request_body = CreateTeam,
    responses((status = 201, body = Team), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_team(
    State(s): State<AppState>,
    User(u): User,
    Json(req): Json<CreateTeam>,
) -> ApiResult<(StatusCode, axum::Json<Team>)> {
    u.require_admin("create teams")?;
    names::validate("team", &req.name).map_err(name_error)?;
    let team = s.store.create_team(&req.name, req.members, s.now()).await?;
    s.auth.forget_all_entities();
    s.cluster.flush().await;
    Ok((StatusCode::CREATED, axum::Json(team)))
}

/// Teams: all for admins, the caller's own otherwise.
#[utoipa::path(get, path = "/api/v1/teams", tag = "identity",
    responses((status = 200, body = Vec<Team>)))]
async fn list_teams(State(s): State<AppState>, User(u): User) -> ApiResult<axum::Json<Vec<Team>>> {
    let mut teams = s.store.list_teams().await?;
    if !u.admin {
        teams.retain(|t| u.entities.contains(&t.name));
    }
    Ok(axum::Json(teams))
}

#[utoipa::path(get, path = "/api/v1/teams/{name}", tag = "identity",
    params(("name" = String, Path, description = "team name")),
    responses((status = 200, body = Team), (status = 404, body = ErrorBody)))]
async fn get_team(
    State(s): State<AppState>,
    User(u): User,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Team>> {
    let not_found = || ApiError::not_found(format!("no team named {name:?}"));
    if !u.can_use(&name) {
        return Err(not_found());
    }
    Ok(axum::Json(
        s.store.get_team(&name).await?.ok_or_else(not_found)?,
    ))
}

/// Delete a team that owns no queues (admins only).
#[utoipa::path(delete, path = "/api/v1/teams/{name}", tag = "identity",
    params(("name" = String, Path, description = "team name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_team(
    State(s): State<AppState>,
    User(u): User,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    u.require_admin("delete teams")?;
    s.store.delete_team(&name).await?;
    s.auth.forget_all_entities();
    s.cluster.flush().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Add a member to a team (admins only).
#[utoipa::path(post, path = "/api/v1/teams/{name}/members", tag = "identity", request_body = AddMember,
    params(("name" = String, Path, description = "team name")),
    responses((status = 200, body = Team), (status = 404, body = ErrorBody)))]
async fn add_member(
    State(s): State<AppState>,
    User(u): User,
    Path(name): Path<String>,
    Json(req): Json<AddMember>,
) -> ApiResult<axum::Json<Team>> {
    u.require_admin("change team membership")?;
    s.store.add_member(&name, &req.user, s.now()).await?;
    s.auth.forget_user_entities(&req.user);
    s.cluster.flush().await;
    let team = s
        .store
        .get_team(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no team named {name:?}")))?;
    Ok(axum::Json(team))
}

/// Remove a member from a team (admins only). The user's agents serving the team's
/// queues lose their sessions at once.
#[utoipa::path(delete, path = "/api/v1/teams/{name}/members/{user}", tag = "identity",
    params(("name" = String, Path, description = "team name"), ("user" = String, Path, description = "user name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_member(
    State(s): State<AppState>,
    User(u): User,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    u.require_admin("change team membership")?;
    let ended = s.store.remove_member(&name, &user, s.now()).await?;
    s.auth.forget_user_entities(&user);
    s.cluster.flush().await;
    wake_ended(&s, ended);
    Ok(StatusCode::NO_CONTENT)
}

/// Create an API key, for yourself or (admins) for another user. Shown once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "identity", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 404, body = ErrorBody)))]
async fn create_key(
    State(s): State<AppState>,
    User(u): User,
    Json(req): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, axum::Json<CreatedApiKey>)> {
    let owner = req.user.clone().unwrap_or_else(|| u.name.clone());
    if owner != u.name {
        u.require_admin("create keys for other users")?;
        if s.store.get_user(&owner).await?.is_none() {
            return Err(ApiError::not_found(format!("no user named {owner:?}")));
        }
    }
    if req.name.trim().is_empty() || req.name.len() > 128 {
        return Err(ApiError::bad_request(
            "a key name must be 1 to 128 characters",
        ));
    }
    let key = s.store.create_key(&owner, &req.name, s.now()).await?;
    Ok((StatusCode::CREATED, axum::Json(key)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct KeyListParams {
    /// Admins: list every user's keys.
    #[serde(default)]
    all: bool,
}

/// API keys (metadata only; secrets are never shown again).
#[utoipa::path(get, path = "/api/v1/keys", tag = "identity", params(KeyListParams),
    responses((status = 200, body = Vec<ApiKey>)))]
async fn list_keys(
    State(s): State<AppState>,
    User(u): User,
    Query(p): Query<KeyListParams>,
) -> ApiResult<axum::Json<Vec<ApiKey>>> {
    let keys = if p.all {
        u.require_admin("list every user's keys")?;
        s.store.list_keys(None).await?
    } else {
        s.store.list_keys(Some(&u.name)).await?
    };
    Ok(axum::Json(keys))
}

/// Revoke an API key: your own, or any (admins). Agents registered with it lose their
/// sessions at once.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "identity",
    params(("id" = String, Path, description = "key id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(s): State<AppState>,
    User(u): User,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let not_found = || ApiError::not_found(format!("no API key with id {id:?}"));
    let key = s.store.get_key(&id).await?.ok_or_else(not_found)?;
    if key.user != u.name && !u.admin {
        return Err(not_found());
    }
    let ended = s.store.revoke_key(&id, s.now()).await?;
    s.auth.forget_key(&id);
    s.cluster.flush().await;
    wake_ended(&s, ended);
    Ok(StatusCode::NO_CONTENT)
}

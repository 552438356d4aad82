//! Who is calling, and what they may see.
//!
//! Credentials arrive as `Authorization: Bearer TOKEN`: an API key (`hk_…`) for people
//! and agents, or a run token (`hrt_…`) for a job reporting back. Key and membership
//! lookups are cached for up to [`CACHE_TTL`]. A change drops the entry on this replica
//! at once and on the others by a [`crate::cluster`] signal, which the change's request
//! waits to have sent before it answers; a replica that may have missed signals uses
//! no cache until it hears the others again. An entry read while a change was being
//! made is not kept (each cache counts its changes).
//!
//! Access rule: a user may use their own entity and the teams they belong to; admins
//! may use every entity. Objects of other entities answer 404, exactly like objects
//! that do not exist. [`entity_for`] is the one check of an entity a request names.
//! (Agents are checked again, fresh from the store, on every claim and heartbeat:
//! see `store::agents`.)
//!
//! A run token works while its run is neither ended nor handed back to its queue: the
//! store revokes it with the transition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hoist_core::secret::Secret;
use tokio::time::Instant;

use crate::api::AppState;
use crate::cluster::{CoherentMap, Outbox, Signal};
use crate::error::ApiError;
use crate::secrets::{CredentialKind, parse_credential, verify};
use crate::store::identity::KeyRecord;

/// Longest a cached key or membership is used (changes drop entries sooner: see the
/// module docs).
pub const CACHE_TTL: Duration = Duration::from_secs(60);
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    User(UserPrincipal),
    /// A job holding its run's token: may read that run and append to its logs.
    RunToken {
        run_id: String,
    },
}

#[derive(Debug, Clone)]
pub struct UserPrincipal {
    pub name: String,
    pub admin: bool,
    pub key_id: String,
    /// The user's own entity first, then their teams.
    pub entities: Vec<String>,
}

impl UserPrincipal {
    pub fn can_use(&self, entity: &str) -> bool {
        self.admin || self.entities.iter().any(|e| e == entity)
    }
    /// Entities to filter lists by (`None` for admins: everything).
    pub fn visible(&self) -> Option<Vec<String>> {
        (!self.admin).then(|| self.entities.clone())
    }
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "only admins can {what}; ask an admin of this hoist server"
            )))
        }
    }
}

/// Most cached keys (and, separately, users' memberships) before a cache is emptied.
const CACHE_MAX: usize = 100_000;

/// Cached key records and memberships; see the module docs.
pub struct AuthCache {
    out: Arc<Outbox>,
    keys: CoherentMap<String, KeyRecord>,
    entities: CoherentMap<String, Vec<String>>,
    touched: Mutex<HashMap<String, Instant>>,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache::with_outbox(Arc::default())
    }
}

impl AuthCache {
    /// A cache publishing its changes through `out`.
    pub fn with_outbox(out: Arc<Outbox>) -> AuthCache {
        AuthCache {
            keys: CoherentMap::new(out.clone(), CACHE_TTL, CACHE_MAX),
            entities: CoherentMap::new(out.clone(), CACHE_TTL, CACHE_MAX),
            touched: Mutex::default(),
            out,
        }
    }

    pub fn forget_key(&self, id: &str) {
        self.forget_key_here(id);
        self.out.publish(Signal::Key(id.to_string()));
    }
    pub fn forget_key_here(&self, id: &str) {
        self.keys.remove(id);
    }
    pub fn forget_user_entities(&self, user: &str) {
        self.forget_user_entities_here(user);
        self.out.publish(Signal::UserEntities(user.to_string()));
    }
    pub fn forget_user_entities_here(&self, user: &str) {
        self.entities.remove(user);
    }
    pub fn forget_all_entities(&self) {
        self.forget_all_entities_here();
        self.out.publish(Signal::AllEntities);
    }
    pub fn forget_all_entities_here(&self) {
        self.entities.clear();
    }
    /// Forgets every cached key of a user, and their entities (a deleted user).
    pub fn forget_user(&self, user: &str) {
        self.forget_user_here(user);
        self.out.publish(Signal::User(user.to_string()));
    }
    pub fn forget_user_here(&self, user: &str) {
        self.keys.retain(|rec| rec.user != user);
        self.forget_user_entities_here(user);
    }
    /// Forgets everything (signals may have been missed).
    pub fn clear_here(&self) {
        self.keys.clear();
        self.entities.clear();
    }
}

/// The entity a request names (or the caller's own when it names none), if the caller
/// may use it; otherwise "not found", like an entity that does not exist. With
/// `must_exist`, an entity the caller could use but which does not exist (an admin
/// naming anything) is "not found" too.
pub async fn entity_for(
    s: &AppState,
    u: &UserPrincipal,
    named: Option<&str>,
    must_exist: bool,
) -> Result<String, ApiError> {
    let entity = named.unwrap_or(&u.name);
    if !u.can_use(entity) {
        return Err(ApiError::not_found(format!(
            "no entity {entity:?} that you can use; yours are {}",
            u.entities.join(", ")
        )));
    }
    if must_exist && s.store.entity_kind(entity).await?.is_none() {
        return Err(ApiError::not_found(format!("no entity {entity:?}")));
    }
    Ok(entity.to_string())
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let h = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "missing Authorization header; log in with `hoist login` or set HOIST_API_KEY",
            )
        })?;
    let s = h
        .to_str()
        .map_err(|_| ApiError::unauthenticated("the Authorization header is not valid text"))?;
    s.strip_prefix("Bearer ")
        .or_else(|| s.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header must be `Bearer <API key>`")
        })
}

fn invalid() -> ApiError {
    ApiError::unauthenticated(
        "the API key is not valid (unknown, revoked or mistyped); create a new one with `hoist key create` or ask an admin",
    )
}

pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
    let token = bearer(parts)?;
    let (kind, id, secret) = parse_credential(token).ok_or_else(invalid)?;
    match kind {
        CredentialKind::ApiKey => Ok(Principal::User(key_principal(state, id, secret).await?)),
        CredentialKind::RunToken => {
            let rec = state.store.run_token(id).await?.ok_or_else(invalid)?;
            if !verify(secret, &rec.secret_hash) || rec.expires_at < state.clock.now_ms() {
                return Err(ApiError::unauthenticated(
                    "the run token is not valid or has expired",
                ));
            }
            if rec.revoked {
                return Err(ApiError::unauthenticated(
                    "the run token no longer works: its run has ended, or went back to its queue (a new attempt gets a new token)",
                ));
            }
            Ok(Principal::RunToken { run_id: rec.run_id })
        }
    }
}

/// The user an API key (`hk_ID_SECRET`, split) acts for, if the key is valid.
pub async fn key_principal(
    state: &AppState,
    id: &str,
    secret: &str,
) -> Result<UserPrincipal, ApiError> {
    let rec = key_record(state, id).await?.ok_or_else(invalid)?;
    if rec.revoked || !verify(secret, &rec.secret_hash) {
        return Err(invalid());
    }
    touch(state, id);
    let entities = entities_of(state, &rec.user).await?;
    Ok(UserPrincipal {
        name: rec.user,
        admin: rec.admin,
        key_id: rec.id,
        entities,
    })
}

async fn key_record(state: &AppState, id: &str) -> Result<Option<KeyRecord>, ApiError> {
    let keys = &state.auth.keys;
    if let Some(rec) = keys.get(id) {
        return Ok(Some(rec));
    }
    let mark = keys.mark();
    let rec = state.store.key_record(id).await?;
    if let Some(r) = &rec {
        keys.put(mark, id.to_string(), r.clone());
    }
    Ok(rec)
}

pub async fn entities_of(state: &AppState, user: &str) -> Result<Vec<String>, ApiError> {
    let cache = &state.auth.entities;
    if let Some(es) = cache.get(user) {
        return Ok(es);
    }
    let mark = cache.mark();
    let mut es = vec![user.to_string()];
    es.extend(state.store.teams_of(user).await?);
    cache.put(mark, user.to_string(), es.clone());
    Ok(es)
}

/// Records key use at most once a minute, off the request path.
fn touch(state: &AppState, id: &str) {
    {
        let mut t = state.auth.touched.lock().expect("auth cache");
        if let Some(at) = t.get(id)
            && at.elapsed() < TOUCH_EVERY
        {
            return;
        }
        t.insert(id.to_string(), Instant::now());
    }
    let store = state.store.clone();
    let now = state.clock.now_ms();
    let id = id.to_string();
    tokio::spawn(async move {
        if let Err(e) = store.touch_key(&id, now).await {
            tracing::debug!(message = "Could not record API key use.", error = %e);
        }
    });
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, parts).await
    }
}

/// A caller who must be a user (API key), not a run token.
pub struct User(pub UserPrincipal);

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, parts).await? {
            Principal::User(u) => Ok(User(u)),
            Principal::RunToken { .. } => Err(ApiError::forbidden(
                "a run token can only read its own run and append to its logs; use an API key",
            )),
        }
    }
}

/// A signed-in web UI session (see `web::session`): the user it acts for, with the
/// rights of the API key it was opened with at this moment.
pub struct WebSession {
    pub user: UserPrincipal,
    pub id: String,
    /// The cookie's secret (the CSRF token is derived from it).
    pub secret: String,
}

/// Opens a web session acting with `user`'s API key; returns the cookie value
/// (`hs_ID_SECRET`). Expired sessions are deleted on the way.
pub async fn open_session(state: &AppState, user: &UserPrincipal) -> Result<Secret, ApiError> {
    let now = state.clock.now_ms();
    if let Err(e) = state.store.sweep_web_sessions(now).await {
        tracing::debug!(message = "Could not delete expired web sessions.", error = %e);
    }
    let (id, token, hash) = crate::secrets::new_session();
    let ttl = i64::try_from(state.cfg.web_session_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    state
        .store
        .create_web_session(&id, &hash, &user.key_id, now, now.saturating_add(ttl))
        .await?;
    tracing::info!(message = "Signed in to the web UI.", user = %user.name, key = %user.key_id, session = %id);
    Ok(token)
}

/// The session a cookie value names, if it is valid: known, unexpired, its secret
/// right, and its API key neither revoked nor its user deleted (checked now, through
/// the same cache as bearer keys).
pub async fn session_principal(
    state: &AppState,
    cookie: &str,
) -> Result<Option<WebSession>, ApiError> {
    let Some((id, secret)) = crate::secrets::parse_session(cookie) else {
        return Ok(None);
    };
    let Some(rec) = state.store.web_session(id).await? else {
        return Ok(None);
    };
    if !verify(secret, &rec.secret_hash) || rec.expires_at <= state.clock.now_ms() {
        return Ok(None);
    }
    let Some(key) = key_record(state, &rec.key_id).await? else {
        return Ok(None);
    };
    if key.revoked {
        return Ok(None);
    }
    let entities = entities_of(state, &key.user).await?;
    Ok(Some(WebSession {
        user: UserPrincipal {
            name: key.user,
            admin: key.admin,
            key_id: key.id,
            entities,
        },
        id: rec.id,
        secret: secret.to_string(),
    }))
}

/// Ends a web session (sign-out).
pub async fn end_session(state: &AppState, id: &str) -> Result<(), ApiError> {
    state.store.delete_web_session(id).await?;
    Ok(())
}

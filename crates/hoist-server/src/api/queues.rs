//! `/api/v1/queues`: create, list, show, update, delete; config and template checks.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hoist_core::api::{CreateQueue, ErrorBody, Queue, UpdateQueue};
use hoist_core::resource::policy::PrivilegedSetting;
use hoist_core::resource::{self, ConfigProblem, ResourceType};
use hoist_core::template::{self, TemplateProblem, TemplateVariable, VarType};
use hoist_core::{names, yaml};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Json, Query};
use crate::auth::{User, UserPrincipal, entity_for};
use crate::cluster::{CoherentMap, Outbox, Signal};
use crate::error::{ApiError, ApiResult};
use crate::store::queues::{NewQueue, QueueChanges};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_queue, list_queues))
        .routes(routes!(get_queue, update_queue, delete_queue))
}

/// Reads a config given as an object or as a YAML/JSON string.
pub fn config_from_input(input: Option<Value>) -> ApiResult<Value> {
    let v = match input {
        None | Some(Value::Null) => return Ok(json!({})),
        Some(Value::String(text)) => yaml::parse_document(&text).map_err(|e| {
            ApiError::invalid_config(format!("the config is not valid YAML or JSON: {e}"))
                .with_details(json!({"line": e.line, "column": e.column}))
        })?,
        Some(v) => v,
    };
    if !v.is_object() {
        return Err(ApiError::invalid_config(
            "the config must be an object (a mapping of keys to values)",
        ));
    }
    Ok(v)
}

pub fn config_problems(resource: ResourceType, problems: Vec<ConfigProblem>) -> ApiError {
    let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    ApiError::invalid_config(format!(
        "the {resource} config has {} problem(s):\n{}",
        problems.len(),
        list.join("\n")
    ))
    .with_details(json!({ "problems": problems }))
}

pub fn template_problems(what: &str, problems: Vec<TemplateProblem>) -> ApiError {
    let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    ApiError::invalid_template(format!("{what}:\n{}", list.join("\n")))
        .with_details(json!({ "problems": problems.iter().map(|p| json!({"variable": p.variable, "message": p.message})).collect::<Vec<_>>() }))
}

/// A value each variable could take, to check a queue config at create time.
fn sample_values(vars: &[TemplateVariable]) -> BTreeMap<String, Value> {
    vars.iter()
        .map(|v| {
            let sample = v
                .default
                .clone()
                .or_else(|| v.choices.as_ref().and_then(|c| c.first().cloned()))
                .unwrap_or_else(|| match v.kind {
                    VarType::String => json!("value"),
                    VarType::Int => json!(v.min.map(|m| m.ceil() as i64).unwrap_or(1)),
                    VarType::Float => json!(v.min.unwrap_or(1.0)),
                });
            (v.name.clone(), sample)
        })
        .collect()
}

/// Checks a queue's config and template variables together; returns the config's
/// privileged settings (see [`resource::policy::queue_privileges`]).
pub fn check_queue(
    resource: ResourceType,
    config: &Value,
    vars: &[TemplateVariable],
) -> ApiResult<Vec<PrivilegedSetting>> {
    template::check_definitions(vars)
        .map_err(|p| template_problems("the template variables are not valid", p))?;
    template::check_usage(vars, config)
        .map_err(|p| template_problems("the config uses undefined template variables", p))?;
    let resolved = template::substitute(config, &sample_values(vars));
    resource::validate_config(resource, &resolved).map_err(|p| config_problems(resource, p))?;
    resource::policy::queue_privileges(resource, config, &resolved)
        .map_err(|p| config_problems(resource, p))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueWriteParams {
    /// Accept privileged settings in the config (admins only; agents still run them
    /// only when their own config allows them).
    #[serde(default)]
    pub allow_privileged: bool,
    /// Check everything a create or update checks (name, entity, config, template
    /// variables, privileges, a name already taken) and answer with the queue it would
    /// make, storing nothing (200 instead of 201).
    #[serde(default)]
    pub dry_run: bool,
}

/// Refuses privileged settings an admin did not allow: `added` are those the config
/// gains. An admin asking for them is logged with what was allowed.
fn approve_privileges(
    u: &UserPrincipal,
    allow: bool,
    resource: ResourceType,
    queue: &str,
    added: &[PrivilegedSetting],
) -> ApiResult<()> {
    if added.is_empty() {
        return Ok(());
    }
    if !allow {
        let problems: Vec<ConfigProblem> = added
            .iter()
            .map(|s| {
                ConfigProblem::new(
                    s.path.clone(),
                    format!(
                        "`{}` {}; a queue config may hold it only when an admin allows it (allow_privileged=true, `hoist queue create|update --allow-privileged`), and agents run it only when their own config allows it",
                        s.shown, s.effect
                    ),
                )
            })
            .collect();
        let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        return Err(ApiError::invalid_config(format!(
            "the {resource} config asks for {} privileged setting(s):\n{}",
            problems.len(),
            list.join("\n")
        ))
        .with_details(json!({ "problems": problems })));
    }
    let shown: Vec<String> = added
        .iter()
        .map(|s| format!("{} ({})", s.shown, s.path))
        .collect();
    tracing::warn!(message = "Privileged settings allowed by an admin.", queue = %queue, by = %u.name, settings = %shown.join(", "));
    Ok(())
}

/// Only admins may allow privileged settings.
fn check_allow_privileged(u: &UserPrincipal, allow: bool) -> ApiResult<()> {
    if allow && !u.admin {
        return Err(ApiError::forbidden(
            "only admins can allow privileged settings in a queue config (allow_privileged); remove them from the config, or ask an admin to create or update the queue",
        ));
    }
    Ok(())
}

/// Queues by `(entity, name)`, for the launch path. A change drops the entry on this
/// replica at once and on the others by a [`crate::cluster`] signal (the change's
/// request answers once it is sent); entries live at most [`QUEUE_CACHE_TTL`], and are
/// not used while the replica may be missing signals (see [`crate::auth`], which
/// caches the same way). A launch onto a queue deleted meanwhile is still refused by
/// the store. Off when [`ServerConfig::queue_cache`](crate::ServerConfig::queue_cache)
/// is false.
pub struct QueueCache {
    out: std::sync::Arc<Outbox>,
    map: CoherentMap<(String, String), Queue>,
}

pub const QUEUE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for QueueCache {
    fn default() -> Self {
        QueueCache::with_outbox(std::sync::Arc::default())
    }
}

impl QueueCache {
    /// A cache publishing its changes through `out`.
    pub fn with_outbox(out: std::sync::Arc<Outbox>) -> QueueCache {
        QueueCache {
            map: CoherentMap::new(out.clone(), QUEUE_CACHE_TTL, 10_000),
            out,
        }
    }
    pub fn forget(&self, entity: &str, name: &str) {
        self.forget_here(entity, name);
        self.out
            .publish(Signal::QueueDef(entity.to_string(), name.to_string()));
    }
    pub fn forget_here(&self, entity: &str, name: &str) {
        self.map.remove(&(entity.to_string(), name.to_string()));
    }
    /// Forgets everything (signals may have been missed).
    pub fn clear_here(&self) {
        self.map.clear();
    }
}

async fn cached_queue(s: &AppState, entity: &str, name: &str) -> ApiResult<Option<Queue>> {
    if !s.cfg.queue_cache {
        return Ok(s.store.get_queue(entity, name).await?);
    }
    let cache = &s.queues.map;
    let key = (entity.to_string(), name.to_string());
    if let Some(q) = cache.get(&key) {
        return Ok(Some(q));
    }
    let mark = cache.mark();
    let q = s.store.get_queue(entity, name).await?;
    if let Some(q) = &q {
        cache.put(mark, key, q.clone());
    }
    Ok(q)
}

/// Resolves `entity/name` for the caller; other entities' queues are "not found".
pub async fn find_queue(
    s: &AppState,
    u: &UserPrincipal,
    entity: &str,
    name: &str,
) -> ApiResult<Queue> {
    let not_found = || {
        ApiError::not_found(format!(
            "no queue {entity}/{name}; `hoist queue list` shows the queues you can use"
        ))
    };
    if !u.can_use(entity) {
        return Err(not_found());
    }
    cached_queue(s, entity, name).await?.ok_or_else(not_found)
}

/// Finds a queue by name among the caller's entities (own first), or in `entity`.
pub async fn resolve_queue(
    s: &AppState,
    u: &UserPrincipal,
    entity: Option<&str>,
    name: &str,
) -> ApiResult<Queue> {
    if let Some(e) = entity {
        return find_queue(s, u, e, name).await;
    }
    let mut found = Vec::new();
    for e in &u.entities {
        if let Some(q) = cached_queue(s, e, name).await? {
            found.push(q);
        }
    }
    match found.len() {
        0 => Err(ApiError::not_found(format!(
            "no queue named {name:?} in your entities ({}); `hoist queue list` shows the queues you can use",
            u.entities.join(", ")
        ))),
        1 => Ok(found.into_iter().next().expect("one")),
        _ if found[0].entity == u.name => Ok(found.into_iter().next().expect("one")),
        _ => Err(ApiError::bad_request(format!(
            "queue {name:?} exists in several of your teams ({}); name one with --entity",
            found
                .iter()
                .map(|q| q.entity.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Create a queue. The config is checked against the resource's schema; privileged
/// settings (privileged containers, added capabilities, host namespaces, host paths,
/// devices…) are refused unless an admin allows them with `allow_privileged=true`.
#[utoipa::path(post, path = "/api/v1/queues", tag = "queues", request_body = CreateQueue,
    params(QueueWriteParams),
    responses((status = 201, body = Queue), (status = 200, body = Queue, description = "dry_run: the queue it would create; nothing was stored"), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "allow_privileged asked by a non-admin"),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create_queue(
    State(s): State<AppState>,
    User(u): User,
    Query(p): Query<QueueWriteParams>,
    Json(req): Json<CreateQueue>,
) -> ApiResult<(StatusCode, axum::Json<Queue>)> {
    check_allow_privileged(&u, p.allow_privileged)?;
    names::validate("queue", &req.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let entity = entity_for(&s, &u, req.entity.as_deref(), true).await?;
    let resource: ResourceType = req.resource.parse().map_err(ApiError::bad_request)?;
    let config = config_from_input(req.config)?;
    let privileges = check_queue(resource, &config, &req.template_variables)?;
    let shown = format!("{entity}/{}", req.name);
    approve_privileges(&u, p.allow_privileged, resource, &shown, &privileges)?;
    if p.dry_run {
        if s.store.get_queue(&entity, &req.name).await?.is_some() {
            return Err(ApiError::conflict(format!(
                "a queue {shown} exists already; pick another name"
            )));
        }
        let now = chrono::DateTime::from_timestamp_millis(s.now()).unwrap_or_default();
        let q = Queue {
            id: String::new(),
            entity,
            name: req.name,
            resource,
            config,
            template_variables: req.template_variables,
            prioritize: req.prioritize,
            description: req.description.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            depth: 0,
        };
        return Ok((StatusCode::OK, axum::Json(q)));
    }
    let q = s
        .store
        .create_queue(
            NewQueue {
                entity,
                name: req.name,
                resource,
                config,
                template_variables: req.template_variables,
                prioritize: req.prioritize,
                description: req.description.unwrap_or_default(),
            },
            s.now(),
        )
        .await?;
    tracing::info!(message = "Queue created.", queue = %format!("{}/{}", q.entity, q.name), resource = %q.resource, by = %u.name);
    Ok((StatusCode::CREATED, axum::Json(q)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueListParams {
    /// Only this entity's queues.
    pub entity: Option<String>,
    /// Only queues with this name (in any of your entities).
    pub name: Option<String>,
}

/// Queues of the entities the caller may use.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues", params(QueueListParams),
    responses((status = 200, body = Vec<Queue>)))]
pub(crate) async fn list_queues(
    State(s): State<AppState>,
    User(u): User,
    Query(p): Query<QueueListParams>,
) -> ApiResult<axum::Json<Vec<Queue>>> {
    if let Some(e) = &p.entity {
        entity_for(&s, &u, Some(e), false).await?;
    }
    let visible = u.visible();
    let mut qs = s.store.list_queues(visible.as_deref()).await?;
    if let Some(e) = &p.entity {
        qs.retain(|q| &q.entity == e);
    }
    if let Some(n) = &p.name {
        qs.retain(|q| &q.name == n);
    }
    Ok(axum::Json(qs))
}

#[utoipa::path(get, path = "/api/v1/queues/{entity}/{name}", tag = "queues",
    params(("entity" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Queue), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_queue(
    State(s): State<AppState>,
    User(u): User,
    Path((entity, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<Queue>> {
    let mut q = find_queue(&s, &u, &entity, &name).await?;
    q.depth = s.store.queue_depth(&q.id).await?;
    Ok(axum::Json(q))
}

/// Change a queue's config, template variables, prioritization or description.
/// Privileged settings the config did not hold before need an admin's
/// `allow_privileged=true`, as at creation.
#[utoipa::path(patch, path = "/api/v1/queues/{entity}/{name}", tag = "queues", request_body = UpdateQueue,
    params(("entity" = String, Path), ("name" = String, Path), QueueWriteParams),
    responses((status = 200, body = Queue), (status = 403, body = ErrorBody, description = "allow_privileged asked by a non-admin"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn update_queue(
    State(s): State<AppState>,
    User(u): User,
    Path((entity, name)): Path<(String, String)>,
    Query(p): Query<QueueWriteParams>,
    Json(req): Json<UpdateQueue>,
) -> ApiResult<axum::Json<Queue>> {
    let q = find_queue(&s, &u, &entity, &name).await?;
    check_allow_privileged(&u, p.allow_privileged)?;
    let config = match req.config {
        Some(c) => config_from_input(Some(c))?,
        None => q.config.clone(),
    };
    let vars = req
        .template_variables
        .unwrap_or(q.template_variables.clone());
    let privileges = check_queue(q.resource, &config, &vars)?;
    // What the queue held already (approved before, or older than this check) stays.
    let before = {
        let resolved = template::substitute(&q.config, &sample_values(&q.template_variables));
        let mut b = resource::policy::privileged_settings(q.resource, &q.config);
        b.extend(resource::policy::privileged_settings(q.resource, &resolved));
        b
    };
    let added = resource::policy::added_privileges(&before, &privileges);
    let shown = format!("{}/{}", q.entity, q.name);
    approve_privileges(&u, p.allow_privileged, q.resource, &shown, &added)?;
    if p.dry_run {
        let mut would = q;
        would.config = config;
        would.template_variables = vars;
        would.prioritize = req.prioritize.unwrap_or(would.prioritize);
        would.description = req.description.unwrap_or(would.description);
        return Ok(axum::Json(would));
    }
    s.queues.forget(&q.entity, &q.name);
    s.cluster.flush().await;
    let mut updated = s
        .store
        .update_queue(
            &q.id,
            QueueChanges {
                config,
                template_variables: vars,
                prioritize: req.prioritize.unwrap_or(q.prioritize),
                description: req.description.unwrap_or(q.description),
            },
            s.now(),
        )
        .await?;
    s.queues.forget(&q.entity, &q.name);
    s.cluster.flush().await;
    updated.depth = s.store.queue_depth(&q.id).await?;
    Ok(axum::Json(updated))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteParams {
    /// Cancel the queue's queued runs with it.
    #[serde(default)]
    pub force: bool,
}

/// Delete a queue. Refused while it has queued runs (unless `force`) or runs held by agents.
#[utoipa::path(delete, path = "/api/v1/queues/{entity}/{name}", tag = "queues", params(("entity" = String, Path), ("name" = String, Path), DeleteParams),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete_queue(
    State(s): State<AppState>,
    User(u): User,
    Path((entity, name)): Path<(String, String)>,
    Query(p): Query<DeleteParams>,
) -> ApiResult<StatusCode> {
    let q = find_queue(&s, &u, &entity, &name).await?;
    let deleted = s.store.delete_queue(&q.id, p.force, &u.name, s.now()).await;
    s.queues.forget(&q.entity, &q.name);
    s.cluster.flush().await;
    deleted?;
    s.dispatch.wake_queue(&q.id);
    Ok(StatusCode::NO_CONTENT)
}

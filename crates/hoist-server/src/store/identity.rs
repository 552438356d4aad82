//! Users, teams, memberships and API keys.
//!
//! Users are deleted softly (`users.deleted_at`): their keys are revoked, their team
//! memberships removed, their agents' sessions ended, and the name stays reserved so
//! that what they did stays attributed to them.
//!
//! Revoking a key, removing a member and deleting a user end, in the same
//! transaction, the sessions of the agents that lost access by it (see
//! [`super::agents`]); they return those agents for the caller to wake.

use hoist_core::api::{ApiKey, CreatedApiKey, Team, User};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::agents::{EndedSessions, Revoked, end_sessions};
use super::{Dialect, Store, StoreError};
use crate::clock::to_datetime;
use crate::secrets::{CredentialKind, new_credential};

/// An API key as the authenticator needs it.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub user: String,
    pub admin: bool,
    pub secret_hash: String,
    pub revoked: bool,
}

fn key_from_row(row: &AnyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        user: row.try_get("user_name")?,
        created_at: to_datetime(row.try_get("created_at")?),
        last_used_at: row
            .try_get::<Option<i64>, _>("last_used_at")?
            .map(to_datetime),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(to_datetime),
    })
}

impl Store {
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.reader())
            .await?)
    }

    /// First start: creates the admin user `admin` with a key named `bootstrap`, unless
    /// the store has users already. Several replicas starting at once on one
    /// PostgreSQL database serialise here (a transaction-scoped advisory lock): one
    /// creates the admin, the others find it and get `None`.
    pub async fn bootstrap_admin(&self, now: i64) -> Result<Option<CreatedApiKey>, StoreError> {
        let dialect = self.dialect();
        self.write(move |c| {
            Box::pin(async move {
                if dialect == Dialect::Postgres {
                    sqlx::query("SELECT pg_advisory_xact_lock(7481)")
                        .execute(&mut *c)
                        .await?;
                }
                let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&mut *c)
                    .await?;
                if users > 0 {
                    return Ok(None);
                }
                Ok(Some(
                    insert_user(c, "admin", true, "bootstrap", now).await?.1,
                ))
            })
        })
        .await
    }

    /// Creates a user (and its entity) with a first API key.
    pub async fn create_user(
        &self,
        name: &str,
        admin: bool,
        key_name: &str,
        now: i64,
    ) -> Result<(User, CreatedApiKey), StoreError> {
        let name = name.to_string();
        let key_name = key_name.to_string();
        self.write(move |c| {
            Box::pin(async move { insert_user(c, &name, admin, &key_name, now).await })
        })
        .await
    }

    /// Deletes a user (softly; see the module docs): refused while the user's entity
    /// owns queues. Returns the agents whose sessions this ended.
    pub async fn delete_user(&self, name: &str, now: i64) -> Result<EndedSessions, StoreError> {
        let name = name.to_string();
        let max_requeues = self.options().max_requeues;
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE users SET deleted_at = $1 WHERE name = $2 AND deleted_at IS NULL",
                )
                .bind(now)
                .bind(&name)
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!("no user named {name:?}")));
                }
                let queues: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM queues WHERE entity = $1")
                        .bind(&name)
                        .fetch_one(&mut *c)
                        .await?;
                if queues > 0 {
                    return Err(StoreError::Conflict(format!(
                        "user {name:?} still owns {queues} queue(s); delete them first"
                    )));
                }
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1 WHERE user_name = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(&name)
                .execute(&mut *c)
                .await?;
                sqlx::query("DELETE FROM team_members WHERE user_name = $1")
                    .bind(&name)
                    .execute(&mut *c)
                    .await?;
                let reason = format!("its owner, user {name}, was deleted");
                end_sessions(c, Revoked::User(&name), &reason, now, max_requeues).await
            })
        })
        .await
    }

    pub async fn get_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT name, admin, created_at FROM users WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(name)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let teams: Vec<String> =
            sqlx::query_scalar("SELECT team FROM team_members WHERE user_name = $1 ORDER BY team")
                .bind(name)
                .fetch_all(self.reader())
                .await?;
        Ok(Some(User {
            name: row.try_get("name")?,
            admin: row.try_get::<i64, _>("admin")? != 0,
            created_at: to_datetime(row.try_get("created_at")?),
            teams,
        }))
    }

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, admin, created_at FROM users WHERE deleted_at IS NULL ORDER BY name",
        )
        .fetch_all(self.reader())
        .await?;
        let members = sqlx::query("SELECT team, user_name FROM team_members ORDER BY team")
            .fetch_all(self.reader())
            .await?;
        let mut users = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get("name")?;
            let mut teams = Vec::new();
            for m in &members {
                if m.try_get::<String, _>("user_name")? == name {
                    teams.push(m.try_get("team")?);
                }
            }
            users.push(User {
                admin: row.try_get::<i64, _>("admin")? != 0,
                created_at: to_datetime(row.try_get("created_at")?),
                name,
                teams,
            });
        }
        Ok(users)
    }

    /// Entity kind (`user` or `team`) if the entity exists.
    pub async fn entity_kind(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT kind FROM entities WHERE name = $1")
                .bind(name)
                .fetch_optional(self.reader())
                .await?,
        )
    }

    pub async fn create_team(
        &self,
        name: &str,
        members: Vec<String>,
        now: i64,
    ) -> Result<Team, StoreError> {
        let name = name.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT kind FROM entities WHERE name = $1")
                        .bind(&name)
                        .fetch_optional(&mut *c)
                        .await?;
                if let Some(kind) = exists {
                    return Err(StoreError::Conflict(format!(
                        "the name {name:?} is taken by an existing {kind}; choose another"
                    )));
                }
                sqlx::query(
                    "INSERT INTO entities (name, kind, created_at) VALUES ($1, 'team', $2)",
                )
                .bind(&name)
                .bind(now)
                .execute(&mut *c)
                .await?;
                for m in &members {
                    add_member_tx(c, &name, m, now).await?;
                }
                let mut members = members;
                members.sort();
                members.dedup();
                Ok(Team {
                    name,
                    members,
                    created_at: to_datetime(now),
                })
            })
        })
        .await
    }

    pub async fn get_team(&self, name: &str) -> Result<Option<Team>, StoreError> {
        let created: Option<i64> =
            sqlx::query_scalar("SELECT created_at FROM entities WHERE name = $1 AND kind = 'team'")
                .bind(name)
                .fetch_optional(self.reader())
                .await?;
        let Some(created) = created else {
            return Ok(None);
        };
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT user_name FROM team_members WHERE team = $1 ORDER BY user_name",
        )
        .bind(name)
        .fetch_all(self.reader())
        .await?;
        Ok(Some(Team {
            name: name.to_string(),
            members,
            created_at: to_datetime(created),
        }))
    }

    pub async fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM entities WHERE kind = 'team' ORDER BY name")
                .fetch_all(self.reader())
                .await?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Some(t) = self.get_team(&n).await? {
                out.push(t);
            }
        }
        Ok(out)
    }

    pub async fn add_member(&self, team: &str, user: &str, now: i64) -> Result<(), StoreError> {
        let (team, user) = (team.to_string(), user.to_string());
        self.write(move |c| Box::pin(async move { add_member_tx(c, &team, &user, now).await }))
            .await
    }

    /// Removes a member. The user's agents serving the team's queues lose their
    /// sessions (returned).
    pub async fn remove_member(
        &self,
        team: &str,
        user: &str,
        now: i64,
    ) -> Result<EndedSessions, StoreError> {
        let (team, user) = (team.to_string(), user.to_string());
        let max_requeues = self.options().max_requeues;
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM team_members WHERE team = $1 AND user_name = $2")
                    .bind(&team)
                    .bind(&user)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!(
                        "user {user:?} is not a member of team {team:?}"
                    )));
                }
                let reason = format!("its owner, user {user}, was removed from team {team}");
                end_sessions(
                    c,
                    Revoked::Membership {
                        user: &user,
                        team: &team,
                    },
                    &reason,
                    now,
                    max_requeues,
                )
                .await
            })
        })
        .await
    }

    /// Deletes a team that owns no queues.
    pub async fn delete_team(&self, team: &str) -> Result<(), StoreError> {
        let team = team.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let queues: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM queues WHERE entity = $1")
                        .bind(&team)
                        .fetch_one(&mut *c)
                        .await?;
                if queues > 0 {
                    return Err(StoreError::Conflict(format!(
                        "team {team:?} still owns {queues} queue(s); delete them first"
                    )));
                }
                sqlx::query("DELETE FROM team_members WHERE team = $1")
                    .bind(&team)
                    .execute(&mut *c)
                    .await?;
                let n = sqlx::query("DELETE FROM entities WHERE name = $1 AND kind = 'team'")
                    .bind(&team)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!("no team named {team:?}")));
                }
                Ok(())
            })
        })
        .await
    }

    /// Teams the user is a member of.
    pub async fn teams_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT team FROM team_members WHERE user_name = $1 ORDER BY team")
                .bind(user)
                .fetch_all(self.reader())
                .await?,
        )
    }

    pub async fn create_key(
        &self,
        user: &str,
        name: &str,
        now: i64,
    ) -> Result<CreatedApiKey, StoreError> {
        let (user, name) = (user.to_string(), name.to_string());
        self.write(move |c| Box::pin(async move { insert_key(c, &user, &name, now).await }))
            .await
    }

    pub async fn list_keys(&self, user: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        let cols = "id, name, user_name, created_at, last_used_at, revoked_at";
        let rows = match user {
            Some(u) => {
                sqlx::query(dynsql!(
                    "SELECT {cols} FROM api_keys WHERE user_name = $1 ORDER BY created_at, id"
                ))
                .bind(u)
                .fetch_all(self.reader())
                .await?
            }
            None => {
                sqlx::query(dynsql!(
                    "SELECT {cols} FROM api_keys ORDER BY user_name, created_at, id"
                ))
                .fetch_all(self.reader())
                .await?
            }
        };
        rows.iter().map(key_from_row).collect()
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, user_name, created_at, last_used_at, revoked_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Revokes a key. Agents registered with it lose their sessions (returned).
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<EndedSessions, StoreError> {
        let id = id.to_string();
        let max_requeues = self.options().max_requeues;
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(&id)
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!(
                        "no active API key with id {id:?}"
                    )));
                }
                let reason = format!("the API key it registered with ({id}) was revoked");
                end_sessions(c, Revoked::Key(&id), &reason, now, max_requeues).await
            })
        })
        .await
    }

    pub async fn key_record(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.user_name, k.secret_hash, k.revoked_at, u.admin, u.deleted_at \
             FROM api_keys k JOIN users u ON u.name = k.user_name WHERE k.id = $1",
        )
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(KeyRecord {
            id: row.try_get("id")?,
            user: row.try_get("user_name")?,
            admin: row.try_get::<i64, _>("admin")? != 0,
            secret_hash: row.try_get("secret_hash")?,
            revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some()
                || row.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
        }))
    }

    /// Records that a key was used (called at most once a minute per key).
    pub async fn touch_key(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }
}

async fn add_member_tx(
    c: &mut super::Conn,
    team: &str,
    user: &str,
    now: i64,
) -> Result<(), StoreError> {
    let is_team: Option<String> =
        sqlx::query_scalar("SELECT kind FROM entities WHERE name = $1 AND kind = 'team'")
            .bind(team)
            .fetch_optional(&mut *c)
            .await?;
    if is_team.is_none() {
        return Err(StoreError::NotFound(format!("no team named {team:?}")));
    }
    let is_user: Option<String> =
        sqlx::query_scalar("SELECT name FROM users WHERE name = $1 AND deleted_at IS NULL")
            .bind(user)
            .fetch_optional(&mut *c)
            .await?;
    if is_user.is_none() {
        return Err(StoreError::NotFound(format!("no user named {user:?}")));
    }
    let present: Option<String> =
        sqlx::query_scalar("SELECT user_name FROM team_members WHERE team = $1 AND user_name = $2")
            .bind(team)
            .bind(user)
            .fetch_optional(&mut *c)
            .await?;
    if present.is_none() {
        sqlx::query("INSERT INTO team_members (team, user_name, added_at) VALUES ($1, $2, $3)")
            .bind(team)
            .bind(user)
            .bind(now)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

async fn insert_key(
    c: &mut super::Conn,
    user: &str,
    name: &str,
    now: i64,
) -> Result<CreatedApiKey, StoreError> {
    let (id, token, hash) = new_credential(CredentialKind::ApiKey);
    sqlx::query(
        "INSERT INTO api_keys (id, user_name, name, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(user)
    .bind(name)
    .bind(&hash)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(CreatedApiKey {
        key: ApiKey {
            id,
            name: name.to_string(),
            user: user.to_string(),
            created_at: to_datetime(now),
            last_used_at: None,
            revoked_at: None,
        },
        secret: token,
    })
}

/// Creates a user (and its entity) with a first API key.
async fn insert_user(
    c: &mut super::Conn,
    name: &str,
    admin: bool,
    key_name: &str,
    now: i64,
) -> Result<(User, CreatedApiKey), StoreError> {
    let exists: Option<String> = sqlx::query_scalar("SELECT kind FROM entities WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *c)
        .await?;
    if let Some(kind) = exists {
        let deleted: Option<i64> =
            sqlx::query_scalar("SELECT deleted_at FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *c)
                .await?
                .flatten();
        return Err(StoreError::Conflict(if deleted.is_some() {
            format!(
                "the name {name:?} belonged to a deleted user and stays reserved; choose another"
            )
        } else {
            format!("the name {name:?} is taken by an existing {kind}; choose another")
        }));
    }
    sqlx::query("INSERT INTO entities (name, kind, created_at) VALUES ($1, 'user', $2)")
        .bind(name)
        .bind(now)
        .execute(&mut *c)
        .await?;
    sqlx::query("INSERT INTO users (name, admin, created_at) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(admin as i64)
        .bind(now)
        .execute(&mut *c)
        .await?;
    let key = insert_key(c, name, key_name, now).await?;
    let user = User {
        name: name.to_string(),
        admin,
        created_at: to_datetime(now),
        teams: vec![],
    };
    Ok((user, key))
}

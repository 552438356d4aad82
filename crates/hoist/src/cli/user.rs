//! `hoist user create|list|show|delete`.

use hoist_core::api::{CreateUser, User};

use super::Ctx;
use super::output::{Fields, Table, ago, err_line, json, or_dash, out, when, yes_no};

#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Create a user (admins only) and print its first API key, once.
    Create(CreateArgs),
    /// List users (admins see all of them).
    #[command(visible_alias = "ls")]
    List,
    /// Show a user and their teams.
    Show(NameArg),
    /// Delete a user (admins only): their API keys stop working, their agents'
    /// sessions end and they leave their teams; the name stays reserved.
    #[command(visible_alias = "rm")]
    Delete(NameArg),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub name: String,
    /// Make the user an admin.
    #[arg(long)]
    pub admin: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArg {
    pub name: String,
}

pub async fn run(ctx: &Ctx, cmd: UserCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        UserCmd::Create(a) => {
            let created = client
                .create_user(&CreateUser {
                    name: a.name,
                    admin: a.admin,
                })
                .await?;
            if ctx.json() {
                return json(&created);
            }
            err_line(&format!(
                "hoist: created user {}{}. Its API key (id {}) follows on stdout and is shown only this once: hand it over now (`hoist login --key-file FILE`).",
                created.user.name,
                if created.user.admin { " (admin)" } else { "" },
                created.api_key.key.id
            ));
            out(created.api_key.secret.expose())?;
            Ok(())
        }
        UserCmd::List => {
            let users = client.list_users().await?;
            if ctx.json() {
                return json(&users);
            }
            let mut t = Table::new(&["NAME", "ADMIN", "TEAMS", "CREATED"]);
            for u in &users {
                t.row(vec![
                    u.name.clone(),
                    yes_no(u.admin).into(),
                    or_dash(&u.teams.join(",")),
                    ago(u.created_at),
                ]);
            }
            t.print()
        }
        UserCmd::Delete(a) => {
            client.delete_user(&a.name).await?;
            if !ctx.json() {
                out(&format!("Deleted user {}.", a.name))?;
            }
            Ok(())
        }
        UserCmd::Show(a) => {
            let u = client.get_user(&a.name).await?;
            if ctx.json() {
                return json(&u);
            }
            out(&describe(&u))?;
            Ok(())
        }
    }
}

fn describe(u: &User) -> String {
    let mut f = Fields::new();
    f.add("user", &u.name);
    f.add("admin", yes_no(u.admin));
    f.add("teams", or_dash(&u.teams.join(", ")));
    f.add("created", when(u.created_at));
    f.render()
}

//! `hoist team create|list|show|delete|add-member|remove-member`.

use hoist_core::api::{CreateTeam, Team};

use super::Ctx;
use super::output::{Fields, Table, ago, json, or_dash, out, when};

#[derive(Debug, clap::Subcommand)]
pub enum TeamCmd {
    /// Create a team (admins only). Its queues are usable by every member.
    Create(CreateArgs),
    /// List teams (yours; admins see all).
    #[command(visible_alias = "ls")]
    List,
    /// Show a team and its members.
    Show(NameArg),
    /// Delete a team that owns no queues (admins only).
    #[command(visible_alias = "rm")]
    Delete(NameArg),
    /// Add a user to a team (admins only).
    AddMember(MemberArgs),
    /// Remove a user from a team (admins only).
    RemoveMember(MemberArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub name: String,
    /// A first member (user name). Repeatable.
    #[arg(short, long = "member", value_name = "USER")]
    pub members: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct MemberArgs {
    pub team: String,
    pub user: String,
}

pub async fn run(ctx: &Ctx, cmd: TeamCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        TeamCmd::Create(a) => {
            let t = client
                .create_team(&CreateTeam {
                    name: a.name,
                    members: a.members,
                })
                .await?;
            if ctx.json() {
                return json(&t);
            }
            out(&format!("Created team {} ({}).", t.name, members(&t)))?;
        }
        TeamCmd::List => {
            let teams = client.list_teams().await?;
            if ctx.json() {
                return json(&teams);
            }
            let mut t = Table::new(&["NAME", "MEMBERS", "CREATED"]);
            for team in &teams {
                t.row(vec![
                    team.name.clone(),
                    or_dash(&team.members.join(",")),
                    ago(team.created_at),
                ]);
            }
            t.print()?;
        }
        TeamCmd::Show(a) => {
            let t = client.get_team(&a.name).await?;
            if ctx.json() {
                return json(&t);
            }
            let mut f = Fields::new();
            f.add("team", &t.name);
            f.add("members", or_dash(&t.members.join(", ")));
            f.add("created", when(t.created_at));
            out(&f.render())?;
        }
        TeamCmd::Delete(a) => {
            client.delete_team(&a.name).await?;
            if !ctx.json() {
                out(&format!("Deleted team {}.", a.name))?;
            }
        }
        TeamCmd::AddMember(a) => {
            let t = client.add_member(&a.team, &a.user).await?;
            if ctx.json() {
                return json(&t);
            }
            out(&format!(
                "Added {} to team {} ({}).",
                a.user,
                t.name,
                members(&t)
            ))?;
        }
        TeamCmd::RemoveMember(a) => {
            client.remove_member(&a.team, &a.user).await?;
            if !ctx.json() {
                out(&format!("Removed {} from team {}.", a.user, a.team))?;
            }
        }
    }
    Ok(())
}

fn members(t: &Team) -> String {
    match t.members.len() {
        0 => "no members".into(),
        _ => format!("members: {}", t.members.join(", ")),
    }
}

//! `hoist key create|list|revoke`.

use hoist_core::api::CreateApiKey;

use super::Ctx;
use super::output::{Table, ago, err_line, json, out};

#[derive(Debug, clap::Subcommand)]
pub enum KeyCmd {
    /// Create an API key (for yourself, or as an admin for --user) and print it, once.
    Create(CreateArgs),
    /// List API keys (metadata only; secrets are never shown again).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Revoke an API key by id.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A name to recognise the key by.
    #[arg(short, long, default_value = "cli")]
    pub name: String,
    /// Create the key for this user (admins only).
    #[arg(short, long)]
    pub user: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Every user's keys (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The key id (from `hoist key list`).
    pub id: String,
}

pub async fn run(ctx: &Ctx, cmd: KeyCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        KeyCmd::Create(a) => {
            let k = client
                .create_key(&CreateApiKey {
                    name: a.name,
                    user: a.user,
                })
                .await?;
            if ctx.json() {
                return json(&k);
            }
            err_line(&format!(
                "hoist: created API key {} ({:?}) for {}. It follows on stdout and is shown only this once.",
                k.key.id, k.key.name, k.key.user
            ));
            out(k.secret.expose())?;
        }
        KeyCmd::List(a) => {
            let keys = client.list_keys(a.all).await?;
            if ctx.json() {
                return json(&keys);
            }
            let mut t = Table::new(&["ID", "NAME", "USER", "CREATED", "LAST USED", "REVOKED"]);
            for k in &keys {
                t.row(vec![
                    k.id.clone(),
                    k.name.clone(),
                    k.user.clone(),
                    ago(k.created_at),
                    k.last_used_at.map(ago).unwrap_or_else(|| "never".into()),
                    k.revoked_at.map(ago).unwrap_or_else(|| "-".into()),
                ]);
            }
            t.print()?;
        }
        KeyCmd::Revoke(a) => {
            client.revoke_key(&a.id).await?;
            if !ctx.json() {
                out(&format!("Revoked API key {}.", a.id))?;
            }
        }
    }
    Ok(())
}

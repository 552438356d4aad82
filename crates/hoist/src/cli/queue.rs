//! `hoist queue create|list|show|update|delete`.

use hoist_client::Client;
use hoist_core::api::{CreateQueue, Queue, UpdateQueue};
use hoist_core::template::{self, TemplateVariable};

use super::input::object_from_file;
use super::output::{Fields, Table, json, or_dash, out, when, yaml_block, yes_no};
use super::{Ctx, invalid, split_ref};

#[derive(Debug, clap::Subcommand)]
pub enum QueueCmd {
    /// Create a queue for a resource (local-process, docker, kubernetes, sagemaker,
    /// vertex; W&B's local-container and gcp-vertex are accepted too).
    Create(CreateArgs),
    /// List the queues you can use.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a queue, its template variables and its config (as YAML).
    Show(ShowArgs),
    /// Change a queue's config, template variables, prioritization or description.
    Update(UpdateArgs),
    /// Delete a queue.
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// NAME, or ENTITY/NAME.
    pub name: String,
    /// The resource the queue's runs go to.
    #[arg(short, long, value_name = "RESOURCE")]
    pub resource: String,
    /// Owner: a team you belong to (default: yourself).
    #[arg(short, long)]
    pub entity: Option<String>,
    /// The resource config: a YAML or JSON file (`-` = stdin).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<String>,
    /// Order runs by priority (critical, high, medium, low) instead of FIFO.
    #[arg(long)]
    pub prioritize: bool,
    /// A template variable: NAME:TYPE[=DEFAULT][,min=N][,max=N][,enum=a|b|c]
    /// [,description=TEXT], or the variable as JSON. Repeatable.
    #[arg(long = "template-var", value_name = "SPEC")]
    pub template_vars: Vec<String>,
    #[arg(short, long)]
    pub description: Option<String>,
    /// Accept privileged settings in the config (privileged containers, added
    /// capabilities, host namespaces, host paths, devices…). Admins only; agents still
    /// run them only when their own config allows them.
    #[arg(long)]
    pub allow_privileged: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this entity's queues.
    #[arg(short, long)]
    pub entity: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// NAME, or ENTITY/NAME.
    pub name: String,
    #[arg(short, long)]
    pub entity: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// NAME, or ENTITY/NAME.
    pub name: String,
    #[arg(short, long)]
    pub entity: Option<String>,
    /// Replace the resource config with this YAML or JSON file (`-` = stdin).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<String>,
    /// Turn priority ordering on or off.
    #[arg(long, value_name = "true|false")]
    pub prioritize: Option<bool>,
    /// Replace the template variables with these (see `queue create`). Repeatable.
    #[arg(
        long = "template-var",
        value_name = "SPEC",
        conflicts_with = "clear_template_vars"
    )]
    pub template_vars: Vec<String>,
    /// Remove every template variable.
    #[arg(long)]
    pub clear_template_vars: bool,
    #[arg(short, long)]
    pub description: Option<String>,
    /// Accept privileged settings the new config adds (admins only; see `queue
    /// create`).
    #[arg(long)]
    pub allow_privileged: bool,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// NAME, or ENTITY/NAME.
    pub name: String,
    #[arg(short, long)]
    pub entity: Option<String>,
    /// Cancel the queue's queued runs with it.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(ctx: &Ctx, cmd: QueueCmd) -> anyhow::Result<()> {
    match cmd {
        QueueCmd::Create(a) => create(ctx, a).await,
        QueueCmd::List(a) => list(ctx, a).await,
        QueueCmd::Show(a) => show(ctx, a).await,
        QueueCmd::Update(a) => update(ctx, a).await,
        QueueCmd::Delete(a) => delete(ctx, a).await,
    }
}

fn template_vars(specs: &[String]) -> anyhow::Result<Vec<TemplateVariable>> {
    specs
        .iter()
        .map(|s| template::parse_spec(s).map_err(|e| invalid(format!("--template-var {s:?}: {e}"))))
        .collect()
}

/// The entity of a queue given by NAME alone: the one you can use (yours first).
pub async fn resolve(
    client: &Client,
    entity: Option<String>,
    name: &str,
) -> anyhow::Result<(String, String)> {
    if let Some(e) = entity {
        return Ok((e, name.to_string()));
    }
    let found: Vec<Queue> = client
        .list_queues(None)
        .await?
        .into_iter()
        .filter(|q| q.name == name)
        .collect();
    match found.len() {
        0 => anyhow::bail!(
            "no queue named {name:?} that you can use; `hoist queue list` shows the queues you can use"
        ),
        1 => Ok((found[0].entity.clone(), name.to_string())),
        _ => {
            let me = client.me().await?;
            if let Some(q) = found.iter().find(|q| q.entity == me.user.name) {
                return Ok((q.entity.clone(), name.to_string()));
            }
            Err(invalid(format!(
                "queue {name:?} exists in several of your entities ({}); name one as ENTITY/{name} or with --entity",
                found
                    .iter()
                    .map(|q| q.entity.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

async fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<()> {
    let (entity, name) = split_ref("queue", &a.name, a.entity.as_deref())?;
    let config = a.config.as_deref().map(object_from_file).transpose()?;
    let req = CreateQueue {
        name,
        entity,
        resource: a.resource,
        config,
        template_variables: template_vars(&a.template_vars)?,
        prioritize: a.prioritize,
        description: a.description,
    };
    let client = ctx.client()?;
    let q = client.create_queue_with(&req, a.allow_privileged).await?;
    if ctx.json() {
        return json(&q);
    }
    out(&format!(
        "Created queue {}/{} ({}).",
        q.entity, q.name, q.resource
    ))?;
    Ok(())
}

pub fn queue_table(qs: &[Queue]) -> Table {
    let mut t = Table::new(&["ENTITY/NAME", "RESOURCE", "DEPTH", "PRIORITIZE"]);
    for q in qs {
        t.row(vec![
            format!("{}/{}", q.entity, q.name),
            q.resource.to_string(),
            q.depth.to_string(),
            yes_no(q.prioritize).to_string(),
        ]);
    }
    t
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let qs = client.list_queues(a.entity.as_deref()).await?;
    if ctx.json() {
        return json(&qs);
    }
    if qs.is_empty() {
        out("No queues. Create one with `hoist queue create NAME --resource RESOURCE`.")?;
        return Ok(());
    }
    queue_table(&qs).print()
}

fn describe(q: &Queue) -> String {
    let mut f = Fields::new();
    f.add("queue", format!("{}/{}", q.entity, q.name));
    f.add("id", &q.id);
    f.add("resource", q.resource.to_string());
    f.add("depth", q.depth.to_string());
    f.add("prioritize", yes_no(q.prioritize));
    f.add("description", or_dash(&q.description));
    f.add("created", when(q.created_at));
    f.add("updated", when(q.updated_at));
    let mut s = f.render();
    if q.template_variables.is_empty() {
        s.push_str("\ntemplate variables: none");
    } else {
        let mut t = Table::new(&[
            "NAME",
            "TYPE",
            "DEFAULT",
            "MIN",
            "MAX",
            "ENUM",
            "DESCRIPTION",
        ]);
        let show = |v: &Option<serde_json::Value>| {
            v.as_ref().map(value_text).unwrap_or_else(|| "-".into())
        };
        let num = |x: Option<f64>| x.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
        for v in &q.template_variables {
            t.row(vec![
                v.name.clone(),
                v.kind.to_string(),
                show(&v.default),
                num(v.min),
                num(v.max),
                v.choices
                    .as_ref()
                    .map(|c| c.iter().map(value_text).collect::<Vec<_>>().join("|"))
                    .unwrap_or_else(|| "-".into()),
                v.description.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        s.push_str("\ntemplate variables:\n");
        s.push_str(&indent(&t.render(), 2));
    }
    s.push_str("\nconfig:\n");
    s.push_str(&yaml_block(&q.config, 2));
    s
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn show(ctx: &Ctx, a: ShowArgs) -> anyhow::Result<()> {
    let (entity, name) = split_ref("queue", &a.name, a.entity.as_deref())?;
    let client = ctx.client()?;
    let (entity, name) = resolve(&client, entity, &name).await?;
    let q = client.get_queue(&entity, &name).await?;
    if ctx.json() {
        return json(&q);
    }
    out(&describe(&q))?;
    Ok(())
}

async fn update(ctx: &Ctx, a: UpdateArgs) -> anyhow::Result<()> {
    let (entity, name) = split_ref("queue", &a.name, a.entity.as_deref())?;
    let template_variables = if a.clear_template_vars {
        Some(Vec::new())
    } else if a.template_vars.is_empty() {
        None
    } else {
        Some(template_vars(&a.template_vars)?)
    };
    let req = UpdateQueue {
        config: a.config.as_deref().map(object_from_file).transpose()?,
        template_variables,
        prioritize: a.prioritize,
        description: a.description,
    };
    if req.config.is_none()
        && req.template_variables.is_none()
        && req.prioritize.is_none()
        && req.description.is_none()
    {
        return Err(invalid(
            "nothing to update: give --config, --prioritize, --template-var, --clear-template-vars or --description",
        ));
    }
    let client = ctx.client()?;
    let (entity, name) = resolve(&client, entity, &name).await?;
    let q = client
        .update_queue_with(&entity, &name, &req, a.allow_privileged)
        .await?;
    if ctx.json() {
        return json(&q);
    }
    out(&format!("Updated queue {}/{}.", q.entity, q.name))?;
    Ok(())
}

async fn delete(ctx: &Ctx, a: DeleteArgs) -> anyhow::Result<()> {
    let (entity, name) = split_ref("queue", &a.name, a.entity.as_deref())?;
    let client = ctx.client()?;
    let (entity, name) = resolve(&client, entity, &name).await?;
    client.delete_queue(&entity, &name, a.force).await?;
    if !ctx.json() {
        out(&format!("Deleted queue {entity}/{name}."))?;
    }
    Ok(())
}

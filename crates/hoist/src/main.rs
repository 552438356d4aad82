//! `hoist`: the one binary: server, agent, and the CLI people use.
//!
//! - `hoist server`: the control plane ([`server_cmd`]).
//! - `hoist agent` / `hoist launch-agent`: the agent ([`agent_cmd`]).
//! - everything else: the CLI ([`cli`]), one module per command group.
//!
//! Exit codes: 0 success, 1 failure, 2 bad usage or invalid input (see
//! [`cli::EXIT_CODES_HELP`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent_cmd;
mod agent_start;
mod bench;
mod cli;
mod server_cmd;
mod up;

use cli::{Ctx, OutputFormat};

#[derive(Debug, Parser)]
#[command(
    name = "hoist",
    version,
    about = "hoist: a self-hosted launch system for ML and compute jobs",
    after_help = cli::EXIT_CODES_HELP,
    propagate_version = true
)]
struct Cli {
    /// Output: human tables, or the API's JSON for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Log line format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// Log filter: a level (error, warn, info, debug, trace) or directives such as
    /// `hoist_server=debug,info`. Default: HOIST_LOG, else `info` for the server and
    /// the agent and `warn` for other commands.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hoist server (HTTP API and web UI).
    Server(server_cmd::ServerArgs),
    /// Log in to a hoist server: check an API key and store it.
    Login(cli::login::LoginArgs),
    /// Remove the stored credentials.
    Logout,
    /// Show who you are logged in as, and the entities you can use.
    Whoami,
    /// Create, list, show, update and delete queues.
    #[command(subcommand)]
    Queue(cli::queue::QueueCmd),
    /// Create, list, show and delete jobs (versioned: an image, a git commit, or
    /// uploaded code).
    #[command(subcommand)]
    Job(cli::job::JobCmd),
    /// Launch a run on a queue; prints its id.
    Launch(cli::launch::LaunchArgs),
    /// List, show, follow, stop and cancel runs.
    #[command(subcommand)]
    Run(cli::run::RunCmd),
    /// Run an agent (with flags), or list agents (`hoist agent list`).
    #[command(visible_alias = "launch-agent")]
    Agent(AgentCmd),
    /// Manage users (creating users is for admins).
    #[command(subcommand)]
    User(cli::user::UserCmd),
    /// Manage teams.
    #[command(subcommand)]
    Team(cli::team::TeamCmd),
    /// Manage API keys.
    #[command(subcommand)]
    Key(cli::key::KeyCmd),
    /// Server, agent and a logged-in CLI on this machine, in one command.
    Up(up::UpArgs),
    /// Benchmarks: `hoist bench queue`, `hoist bench dispatch`, `hoist bench build`,
    /// `hoist bench logs`, `hoist bench ui`.
    Bench(bench::BenchArgs),
}

/// `hoist agent [FLAGS]` runs an agent; `hoist agent list` lists agents.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AgentCmd {
    #[command(subcommand)]
    command: Option<AgentSub>,
    #[command(flatten)]
    args: agent_cmd::AgentArgs,
}

#[derive(Debug, Subcommand)]
enum AgentSub {
    /// List agents: status, host, queues, running jobs, last heartbeat.
    #[command(visible_alias = "ls")]
    List,
}

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let long_running = matches!(
        cli.command,
        Command::Server(_) | Command::Up(_) | Command::Agent(AgentCmd { command: None, .. })
    );
    let filter_text = cli
        .log_level
        .clone()
        .or_else(|| {
            std::env::var("HOIST_LOG")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| if long_running { "info" } else { "warn" }.to_string());
    let mut filter = EnvFilter::builder()
        .parse(&filter_text)
        .map_err(|e| cli::invalid(format!("invalid log filter {filter_text:?}: {e}")))?;
    for d in hoist_agent::logs::SECRET_SAFE_LOG_DIRECTIVES {
        filter = filter.add_directive(d.parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx { output: cli.output };
    match cli.command {
        Command::Server(a) => server_cmd::run(a).await,
        Command::Login(a) => cli::login::login(&ctx, a).await,
        Command::Logout => cli::login::logout(&ctx).await,
        Command::Whoami => cli::login::whoami(&ctx).await,
        Command::Queue(c) => cli::queue::run(&ctx, c).await,
        Command::Job(c) => cli::job::run(&ctx, c).await,
        Command::Launch(a) => cli::launch::launch(&ctx, a).await,
        Command::Run(c) => cli::run::run(&ctx, c).await,
        Command::Agent(AgentCmd {
            command: Some(AgentSub::List),
            ..
        }) => cli::agent::list(&ctx).await,
        Command::Agent(AgentCmd {
            command: None,
            args,
        }) => agent_cmd::run(args).await,
        Command::User(c) => cli::user::run(&ctx, c).await,
        Command::Team(c) => cli::team::run(&ctx, c).await,
        Command::Key(c) => cli::key::run(&ctx, c).await,
        Command::Up(a) => up::run(a).await,
        Command::Bench(a) => bench::run(a).await,
    }
}

fn main() -> ExitCode {
    // Usage errors exit with 2, --help and --version with 0.
    let cli = Cli::parse();
    // reqwest links rustls with aws-lc-rs; choosing it explicitly keeps TLS working
    // should another dependency ever link a second provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if let Err(e) = init_logging(&cli) {
        cli::report(&e);
        return ExitCode::from(cli::exit_code(&e));
    }
    // The agent does little CPU work of its own (its jobs are other processes): one
    // thread keeps it small (one malloc arena, which glibc trims when idle).
    let single = matches!(cli.command, Command::Agent(AgentCmd { command: None, .. }));
    let built = if single {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("hoist")
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("hoist")
            .build()
    };
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            cli::output::err_line(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            cli::report(&e);
            ExitCode::from(cli::exit_code(&e))
        }
    }
}

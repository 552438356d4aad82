//! `hoist login`, `hoist logout`, `hoist whoami`.

use std::io::{BufRead, IsTerminal, Write};

use hoist_client::{ClientError, Secret};

use super::credentials::{self, Target};
use super::output::{Fields, err_line, json, out};
use super::{Ctx, invalid, make_client};

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Server URL (default: HOIST_HOST, else the stored one, else http://127.0.0.1:7480).
    #[arg(long, value_name = "URL")]
    pub host: Option<String>,
    /// The API key (visible to other users in the process list: prefer --key-file or
    /// stdin).
    #[arg(long, value_name = "KEY", conflicts_with = "key_file")]
    pub key: Option<String>,
    /// A file holding the API key (`-` = stdin), such as the server's admin.key.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<String>,
}

/// Reads the key from `--key`, `--key-file` or stdin (a prompt without echo on a
/// terminal).
fn read_key(args: &LoginArgs, host: &str) -> anyhow::Result<Secret> {
    let raw = if let Some(k) = &args.key {
        k.clone()
    } else if let Some(f) = args.key_file.as_deref().filter(|f| *f != "-") {
        std::fs::read_to_string(f).map_err(|e| invalid(format!("cannot read {f}: {e}")))?
    } else if std::io::stdin().is_terminal() && args.key_file.is_none() {
        prompt_hidden(&format!("API key for {host}: "))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| invalid(format!("cannot read the API key from stdin: {e}")))?;
        line
    };
    let key = raw.trim();
    if key.is_empty() {
        return Err(invalid("the API key is empty"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "the API key contains blanks or control characters; give the key alone",
        ));
    }
    Ok(Secret::new(key))
}

/// Reads a line from the terminal with echo off (restored afterwards).
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let mut e = std::io::stderr();
    let _ = e.write_all(prompt.as_bytes());
    let _ = e.flush();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    let _ = e.write_all(b"\n");
    read.map_err(|e| invalid(format!("cannot read the API key: {e}")))?;
    Ok(line)
}

pub async fn login(ctx: &Ctx, args: LoginArgs) -> anyhow::Result<()> {
    let host = match &args.host {
        Some(h) => credentials::normalize_host(h),
        None => Target::resolve()
            .map(|t| t.host)
            .unwrap_or_else(|_| credentials::DEFAULT_HOST.to_string()),
    };
    let key = read_key(&args, &host)?;
    let client = make_client(&host, Some(key.clone()))?;
    let me = client.me().await.map_err(|e| match e {
        ClientError::Api { status: 401, .. } => {
            anyhow::Error::new(e).context(format!("the server at {host} did not accept the key"))
        }
        e => anyhow::Error::new(e),
    })?;
    let path = credentials::save(&host, &key)?;
    if ctx.json() {
        return json(&me);
    }
    out(&format!(
        "Logged in to {host} as {}{}.",
        me.user.name,
        if me.user.admin { " (admin)" } else { "" }
    ))?;
    err_line(&format!("hoist: credentials stored in {}", path.display()));
    Ok(())
}

pub async fn logout(_ctx: &Ctx) -> anyhow::Result<()> {
    let stored = credentials::load().ok().flatten();
    if credentials::remove()? {
        let host = stored.map(|s| s.host).unwrap_or_default();
        out(&format!(
            "Logged out of {host}; the stored credentials are removed."
        ))?;
        out("The API key itself stays valid: revoke it with `hoist key revoke ID` if it leaked.")?;
    } else {
        out("Not logged in: there are no stored credentials.")?;
    }
    if std::env::var_os("HOIST_API_KEY").is_some() {
        err_line("hoist: note: HOIST_API_KEY is set in this environment and still applies");
    }
    Ok(())
}

pub async fn whoami(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let me = client.me().await?;
    if ctx.json() {
        return json(&me);
    }
    let mut f = Fields::new();
    f.add(
        "user",
        format!(
            "{}{}",
            me.user.name,
            if me.user.admin { " (admin)" } else { "" }
        ),
    );
    f.add("server", client.base_url());
    f.add("entities", me.entities.join(", "));
    out(&f.render())?;
    Ok(())
}

//! `shoal`, the command line client: Docker's swarm verbs and flags, sent to the local
//! `shoald` over its unix socket.
//!
//! Every command parses and checks all of its input before it sends anything, so a bad flag
//! never leaves half-done work; rendering is pure (objects in, text out) and unit-tested.
#![forbid(unsafe_code)]

pub mod addr;
pub mod daemon;
pub mod dev;
pub mod doctor;
pub mod duration;
pub mod filter;
#[cfg(test)]
mod fixtures;
pub mod format;
pub mod listing;
pub mod network;
pub mod node;
pub mod publish;
pub mod registry_auth;
pub mod resolve;
pub mod secret;
pub mod service;
pub mod stack;
pub mod swarm;
pub mod table;
pub mod tasks;
pub mod template;

use clap::{Parser, Subcommand};
use daemon::Daemon;
use std::io::{ErrorKind, Write};

/// Docker's `service create --host HOST:IP` shares its name with the global `--host` that
/// picks the daemon; clap cannot hold both, so inside `service create|update` a `--host`
/// whose value is a `HOST:IP` mapping becomes `--add-host`. Daemon addresses
/// (`unix://...`) keep working anywhere on the line, and a task command's own `--host`
/// (`pg_isready --host=db`) is left alone, since its value is no mapping.
pub fn docker_argv<S: AsRef<str>>(argv: &[S]) -> Vec<String> {
    let argv: Vec<String> = argv.iter().map(|a| a.as_ref().to_string()).collect();
    let in_service_spec = argv
        .windows(2)
        .any(|w| w[0] == "service" && (w[1] == "create" || w[1] == "update"));
    if !in_service_spec {
        return argv;
    }
    let mapping = |v: &str| {
        !v.contains("://")
            && v.split_once(':').is_some_and(|(h, ip)| {
                !h.is_empty()
                    && ip
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok()
            })
    };
    let mut out = Vec::with_capacity(argv.len());
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        if a == "--" {
            out.extend(argv[i..].iter().cloned());
            break;
        }
        if a == "--host"
            && let Some(v) = argv.get(i + 1)
            && mapping(v)
        {
            out.push("--add-host".into());
            out.push(v.clone());
            i += 2;
            continue;
        }
        if let Some(v) = a.strip_prefix("--host=")
            && mapping(v)
        {
            out.push(format!("--add-host={v}"));
            i += 1;
            continue;
        }
        out.push(a.clone());
        i += 1;
    }
    out
}

/// `unix://` + `shoal_api::client::DEFAULT_SOCKET` (checked by a test).
pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoald.sock";

/// Where command output goes (stdout in the binary).
pub type Output = dyn Write;

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version,
    about = "Manage a shoal swarm: Docker's swarm commands, served by the local shoald"
)]
pub struct Cli {
    /// Daemon socket to connect to
    #[arg(
        short = 'H',
        long,
        env = "SHOAL_HOST",
        default_value = DEFAULT_HOST,
        global = true,
        value_name = "unix:///PATH"
    )]
    pub host: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the swarm
    #[command(subcommand)]
    Swarm(swarm::SwarmCommand),
    /// Manage swarm nodes
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage services
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage stacks (Compose files)
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Manage Swarm secrets
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Manage Swarm configs
    #[command(subcommand)]
    Config(secret::ConfigCommand),
    /// Check this node: dataplane backend, executor, kernel capabilities, overlay peers
    Doctor {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell)
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show what the local daemon knows about this node (JSON)
    #[command(hide = true)]
    Info,
    /// A local multi-node cluster for trying shoal (network namespaces; needs root)
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

/// Runs one parsed command line against the daemon at `cli.host`.
pub async fn run(cli: Cli, out: &mut Output) -> anyhow::Result<()> {
    let mut daemon = Daemon::new(cli.host);
    match cli.command {
        Command::Swarm(cmd) => swarm::run(cmd, &mut daemon, out).await,
        Command::Node(cmd) => node::run(cmd, &mut daemon, out).await,
        Command::Service(cmd) => service::run(cmd, &mut daemon, out).await,
        Command::Network(cmd) => network::run(cmd, &mut daemon, out).await,
        Command::Stack(cmd) => stack::run(cmd, &mut daemon, out).await,
        Command::Secret(cmd) => secret::run_secret(cmd, &mut daemon, out).await,
        Command::Config(cmd) => secret::run_config(cmd, &mut daemon, out).await,
        Command::Info => {
            let info = daemon.info().await?;
            print(out, &format::json(&info))
        }
        Command::Dev(cmd) => dev::run(cmd, out).await,
        Command::Completion { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "shoal",
                &mut buf,
            );
            print(out, &String::from_utf8_lossy(&buf))
        }
        Command::Doctor { json } => {
            let report = daemon.doctor().await?;
            if json {
                print(out, &format::json(&report))
            } else {
                print(out, &doctor::render(&report))
            }
        }
    }
}

/// Writes command output. A closed pipe (`shoal service ls | head -1`) is not an error.
pub fn print(out: &mut Output, text: &str) -> anyhow::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The single line `main` prints after "Error: ": the error and those of its causes that
/// add something (most of ours already name their cause).
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = one_line(&cause.to_string());
        if line.is_empty() {
            line = text;
        } else if !text.is_empty() && !line.contains(&text) {
            line = format!("{line}: {text}");
        }
    }
    line
}

/// How a clap failure is reported: help and version go to stdout with success; any other
/// parse error is one line.
pub enum ParseOutcome {
    Print(String),
    Fail(String),
}

pub fn parse_outcome<S: AsRef<str>>(err: &clap::Error, argv: &[S]) -> ParseOutcome {
    use clap::error::ErrorKind as K;
    match err.kind() {
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand => {
            let mut text = err.render().to_string();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            ParseOutcome::Print(text)
        }
        _ => {
            // clap's first paragraph is the error (with "[possible values: ...]" on its own
            // line); "tip:" paragraphs suggest the fix. Usage and "--help" lines are dropped.
            let text = err.render().to_string();
            let paragraphs: Vec<String> = text
                .split("\n\n")
                .map(one_line)
                .filter(|p| !p.is_empty())
                .collect();
            let mut first = paragraphs
                .first()
                .map(|p| p.strip_prefix("error: ").unwrap_or(p).to_string())
                .unwrap_or_else(|| "invalid command line".into());
            for tip in paragraphs.iter().filter(|p| p.starts_with("tip:")) {
                first.push_str(&format!(" ({tip})"));
            }
            ParseOutcome::Fail(format!("{first}; see '{} --help'", command_path(argv)))
        }
    }
}

/// The subcommands named on a command line ("shoal service create"), for help hints.
pub fn command_path<S: AsRef<str>>(argv: &[S]) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = vec!["shoal".to_string()];
    let mut args = argv.iter().skip(1).map(AsRef::as_ref);
    while let Some(arg) = args.next() {
        if arg == "-H" || arg == "--host" {
            args.next();
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        match cmd.find_subcommand(arg) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                cmd = sub.clone();
            }
            None => break,
        }
    }
    path.join(" ")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;

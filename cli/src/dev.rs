//! `shoal dev up|down`: a local multi-node cluster on this machine, like kind does for
//! Kubernetes. Each node is a network namespace on an underlay bridge (198.18.0.0/16) with
//! its own shoald; node 1 initializes the swarm, the next `--managers - 1` join as managers
//! and the rest as workers. Needs root.

use crate::{Output, print};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use shoal_integration::testbed::{Testbed, remove_leftovers, remove_tasks_under};
use std::path::PathBuf;

/// Namespace prefix of the dev cluster.
const PREFIX: &str = "shoaldev";

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Build a local cluster and print how to reach each node
    Up {
        /// Number of nodes
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How many of them are managers
        #[arg(long, default_value_t = 1)]
        managers: usize,
        /// Where node state, sockets and logs go
        #[arg(long, default_value = "/run/shoal-dev")]
        dir: PathBuf,
    },
    /// Remove the local cluster: daemons, tasks, namespaces and state
    Down {
        #[arg(long, default_value = "/run/shoal-dev")]
        dir: PathBuf,
    },
}

fn shoald_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("shoald");
    if beside.exists() {
        return Ok(beside);
    }
    Ok(PathBuf::from("shoald"))
}

pub async fn run(cmd: DevCommand, out: &mut Output) -> Result<()> {
    match cmd {
        DevCommand::Up {
            nodes,
            managers,
            dir,
        } => up(nodes, managers, dir, out).await,
        DevCommand::Down { dir } => {
            remove_tasks_under(&dir);
            let removed = remove_leftovers(PREFIX);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            print(
                out,
                &format!("Removed the dev cluster ({removed} namespaces).\n"),
            )
        }
    }
}

async fn up(nodes: usize, managers: usize, dir: PathBuf, out: &mut Output) -> Result<()> {
    if managers == 0 || managers > nodes {
        bail!("--managers {managers} must be between 1 and --nodes ({nodes})");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("shoal dev up creates network namespaces and needs root; run it with sudo");
    }
    if dir.join("node-1").exists() {
        bail!(
            "a dev cluster is already up in {}; remove it with 'shoal dev down'",
            dir.display()
        );
    }
    let mut bed = Testbed::create(PREFIX, nodes, &dir)?;
    let shoald = shoald_path()?;
    for i in 0..nodes {
        bed.start(i, &shoald, &[])?;
    }
    let result = bed.form_swarm(managers).await;
    if let Err(e) = result {
        // Dropping the testbed removes everything it made.
        return Err(e.context("forming the dev cluster; nothing was left behind"));
    }
    let mut text = String::from("NODE     ADDRESS       ROLE      TALK TO IT WITH\n");
    for (i, n) in bed.nodes.iter().enumerate() {
        let role = if i < managers { "manager" } else { "worker" };
        text.push_str(&format!(
            "{:<8} {:<13} {:<9} shoal -H {}\n",
            n.name,
            n.addr,
            role,
            n.host()
        ));
    }
    text.push_str("\nRemove it with: shoal dev down\n");
    bed.detach();
    print(out, &text)
}

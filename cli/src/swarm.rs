//! `shoal swarm ...`: create, join and leave a swarm, and manage its tokens and settings,
//! its autolock and unlock key.

use crate::addr::{
    Cidr, SWARM_PORT, is_unspecified, join_host_port, optional_port, split_host_port,
    with_default_port,
};
use crate::daemon::{Daemon, DaemonError};
use crate::duration;
use crate::format::json;
use crate::node::RoleArg;
use crate::resolve;
use crate::{Output, print};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use shoal_api::control::{ControlRequest, ControlResponse, SwarmUpdate};
use shoal_api::join::KeyText;
use shoal_api::local::{LocalRequest, LocalResponse, NodeInfo, SwarmInit, SwarmJoin};
use shoal_api::objects::NodeRole;

/// Docker's default address pool for overlay subnets.
pub const DEFAULT_ADDR_POOL: &str = "10.0.0.0/8";
const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:2377";
const TOKEN_PREFIX: &str = "SWMTKN-1-";

#[derive(Subcommand, Debug)]
pub enum SwarmCommand {
    /// Initialize a swarm with this node as its first manager
    Init(InitArgs),
    /// Join a swarm as a worker or a manager
    Join(JoinArgs),
    /// Show or rotate the tokens to join the swarm
    JoinToken(JoinTokenArgs),
    /// Leave the swarm
    Leave {
        /// Leave even if this is a manager (the swarm may lose its quorum)
        #[arg(short, long)]
        force: bool,
    },
    /// Update the swarm's settings
    Update(UpdateArgs),
    /// Show the swarm's cluster object as JSON
    Inspect,
    /// Manage the unlock key
    UnlockKey(UnlockKeyArgs),
    /// Unlock a locked manager (the key is read from stdin, or asked for on a terminal)
    Unlock,
}

#[derive(Args, Debug)]
pub struct UnlockKeyArgs {
    /// Rotate unlock key
    #[arg(long)]
    pub rotate: bool,
    /// Only display the key
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Address other nodes reach this one at (ip, ip:port or interface)
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Address the swarm listener binds to
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: String,
    /// Address pool overlay subnets are carved from (repeatable)
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub default_addr_pool: Vec<String>,
    /// Prefix length of the subnets carved from the pools
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub default_addr_pool_mask_length: u8,
    /// UDP port of the VXLAN data path
    #[arg(long, value_name = "PORT", default_value_t = 4789, value_parser = clap::value_parser!(u16).range(1..))]
    pub data_path_port: u16,
    /// Range of dynamic published ports (shoal-specific, for tests)
    #[arg(long, value_name = "LO-HI", hide = true, value_parser = parse_port_range)]
    pub dynamic_port_range: Option<(u16, u16)>,
    /// Enable manager autolocking (requiring an unlock key to start a stopped manager)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub autolock: Option<bool>,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Worker or manager token from 'shoal swarm join-token'
    #[arg(long)]
    pub token: String,
    /// Address other nodes reach this one at (ip, ip:port or interface)
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Address the swarm listener binds to
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: String,
    /// A manager of the swarm
    #[arg(value_name = "HOST:PORT")]
    pub remote: String,
}

#[derive(Args, Debug)]
pub struct JoinTokenArgs {
    /// Replace the token with a new one
    #[arg(long)]
    pub rotate: bool,
    /// Print only the token
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(value_enum)]
    pub role: RoleArg,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Validity period of node certificates
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub cert_expiry: Option<u64>,
    /// Period of node heartbeats
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub dispatcher_heartbeat: Option<u64>,
    /// Terminated tasks kept per slot
    #[arg(long, value_name = "N")]
    pub task_history_limit: Option<u64>,
    /// Change manager autolocking setting (true|false)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub autolock: Option<bool>,
}

pub async fn run(cmd: SwarmCommand, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    match cmd {
        SwarmCommand::Init(args) => init(args, daemon, out).await,
        SwarmCommand::Join(args) => join(args, daemon, out).await,
        SwarmCommand::JoinToken(args) => join_token(args, daemon, out).await,
        SwarmCommand::Leave { force } => {
            match daemon.local(&LocalRequest::SwarmLeave { force }).await? {
                LocalResponse::Done => print(out, "Node left the swarm.\n"),
                _ => bail!("unexpected answer from shoald to swarm leave"),
            }
        }
        SwarmCommand::Update(args) => update(args, daemon, out).await,
        SwarmCommand::Inspect => {
            let cluster = daemon.swarm().await?;
            print(out, &json(&[cluster]))
        }
        SwarmCommand::UnlockKey(args) => unlock_key(args, daemon, out).await,
        SwarmCommand::Unlock => unlock(daemon, out).await,
    }
}

async fn update(args: UpdateArgs, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    // Docker prints the unlock key when this update is what turned autolock on.
    let was_locked = match args.autolock {
        Some(true) => {
            daemon
                .swarm()
                .await?
                .spec
                .encryption_config
                .auto_lock_managers
        }
        _ => true,
    };
    let update = SwarmUpdate {
        version: None,
        cert_expiry_ns: args.cert_expiry,
        heartbeat_period_ns: args.dispatcher_heartbeat,
        task_history_limit: args.task_history_limit,
        autolock: args.autolock,
    };
    // Limits (heartbeat >= 500ms, cert expiry >= 1m) are the daemon's to enforce.
    daemon.done(ControlRequest::SwarmUpdate(update)).await?;
    print(out, "Swarm updated.\n")?;
    if !was_locked {
        let key = fetch_unlock_key(daemon, false).await?;
        print(out, &unlock_text(&key))?;
    }
    Ok(())
}

/// The swarm's unlock key (empty when autolock is off), after a rotation if asked.
async fn fetch_unlock_key(daemon: &mut Daemon, rotate: bool) -> Result<String> {
    match daemon.control(ControlRequest::UnlockKey { rotate }).await? {
        ControlResponse::UnlockKey(key) => Ok(key.0.clone()),
        _ => bail!("unexpected answer from shoald to swarm unlock-key"),
    }
}

/// Docker's reminder, printed wherever a new unlock key is shown.
pub fn unlock_text(key: &str) -> String {
    format!(
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\ncommand and provide the following key:\n\n    {key}\n\nRemember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
    )
}

async fn unlock_key(args: UnlockKeyArgs, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    // The daemon refuses a rotation without autolock ("cannot rotate because autolock is
    // not turned on"), as Docker's CLI does before asking.
    let key = fetch_unlock_key(daemon, args.rotate).await?;
    if key.is_empty() {
        bail!("no unlock key is set");
    }
    if args.quiet {
        return print(out, &format!("{key}\n"));
    }
    let mut text = String::new();
    if args.rotate {
        text.push_str("Successfully rotated manager unlock key.\n");
    }
    text.push_str(&unlock_text(&key));
    print(out, &text)
}

/// `swarm unlock`: only a locked node is asked for the key, as Docker does.
async fn unlock(daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let info = daemon.info().await?;
    match info.local_node_state.as_str() {
        "locked" => {}
        "inactive" => bail!("This node is not part of a swarm"),
        _ => bail!("swarm is not locked"),
    }
    let key = read_key("Enter unlock key: ", out)?;
    match daemon
        .local(&LocalRequest::SwarmUnlock { key: KeyText(key) })
        .await?
    {
        LocalResponse::Done => Ok(()),
        _ => bail!("unexpected answer from shoald to swarm unlock"),
    }
}

/// The unlock key: typed at a prompt without echo on a terminal, else the first line of
/// stdin (`echo $KEY | shoal swarm unlock`).
fn read_key(prompt: &str, out: &mut Output) -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        print(out, prompt)?;
        read_line_without_echo(&stdin, &mut line)?;
        print(out, "\n")?;
    } else {
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| anyhow::anyhow!("reading the unlock key from stdin: {e}"))?;
    }
    Ok(line.trim().to_string())
}

fn read_line_without_echo(stdin: &std::io::Stdin, line: &mut String) -> Result<()> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::BufRead;
    let saved = tcgetattr(stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(stdin, SetArg::TCSANOW, &quiet)?;
    let read = stdin.lock().read_line(line);
    // Echo back on whatever the read did.
    tcsetattr(stdin, SetArg::TCSANOW, &saved)?;
    read.map_err(|e| anyhow::anyhow!("reading the unlock key: {e}"))?;
    Ok(())
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port range (use LOW-HIGH, e.g. 30000-32767)");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Checks every `swarm init` flag and builds the request.
pub fn init_request(args: &InitArgs) -> Result<SwarmInit> {
    let listen_addr = with_default_port("--listen-addr", &args.listen_addr, SWARM_PORT)?;
    let advertise_addr = args.advertise_addr.clone().unwrap_or_default();
    if !advertise_addr.is_empty() {
        optional_port("--advertise-addr", &advertise_addr)?;
    }
    let pools = if args.default_addr_pool.is_empty() {
        vec![DEFAULT_ADDR_POOL.to_string()]
    } else {
        args.default_addr_pool.clone()
    };
    let mask = args.default_addr_pool_mask_length;
    for pool in &pools {
        let cidr = Cidr::parse("--default-addr-pool", pool)?;
        let max = if cidr.addr.is_ipv4() { 32 } else { 128 };
        if mask < cidr.prefix || mask > max {
            bail!(
                "invalid --default-addr-pool-mask-length {mask}: subnets of pool {pool} need a length from {} to {max}",
                cidr.prefix
            );
        }
    }
    Ok(SwarmInit {
        advertise_addr,
        listen_addr,
        default_addr_pool: pools,
        subnet_size: mask,
        data_path_port: args.data_path_port,
        dynamic_port_range: args.dynamic_port_range,
        autolock: args.autolock.unwrap_or(false),
    })
}

/// The join address implied by the init flags: the advertised host (or the node's address)
/// with the advertised port, or else the listen port.
pub fn flag_join_addr(req: &SwarmInit, node_addr: &str) -> String {
    let (listen_host, listen_port) = split_host_port(&req.listen_addr);
    let (adv_host, adv_port) = split_host_port(&req.advertise_addr);
    let port = adv_port
        .or(listen_port)
        .and_then(|p| p.parse().ok())
        .unwrap_or(SWARM_PORT);
    let host = [adv_host, split_host_port(node_addr).0, listen_host]
        .into_iter()
        .find(|h| !h.is_empty() && !is_unspecified(h))
        .unwrap_or(adv_host);
    join_host_port(host, port)
}

/// Docker's instructions for joining with a token.
pub fn join_command_text(role: NodeRole, token: &str, addr: &str) -> String {
    format!(
        "To add a {role} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {addr}\n\n"
    )
}

pub fn init_text(node_id: &str, token: &str, addr: &str) -> String {
    format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n{}To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n",
        join_command_text(NodeRole::Worker, token, addr)
    )
}

/// What `swarm join` prints, from what the node says about itself after joining.
pub fn joined_text(info: Option<&NodeInfo>) -> &'static str {
    let role = info.and_then(|info| match &info.node {
        Some(node) => Some(node.spec.role),
        None if info.control_available => Some(NodeRole::Manager),
        None if info.local_node_state == "active" => Some(NodeRole::Worker),
        None => None,
    });
    match role {
        Some(NodeRole::Manager) => "This node joined a swarm as a manager.\n",
        Some(NodeRole::Worker) => "This node joined a swarm as a worker.\n",
        None => "This node joined a swarm.\n",
    }
}

async fn init(args: InitArgs, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let req = init_request(&args)?;
    let node_id = match daemon.local(&LocalRequest::SwarmInit(req.clone())).await? {
        LocalResponse::Joined { node_id } => node_id,
        _ => bail!("unexpected answer from shoald to swarm init"),
    };
    let token = daemon
        .token(ControlRequest::JoinToken {
            role: NodeRole::Worker,
            rotate: false,
        })
        .await?;
    let info = daemon.info().await.ok();
    let node = daemon.node(&node_id).await.ok();
    let addr = info
        .as_ref()
        .and_then(|info| resolve::join_addr(info, node.as_ref()))
        .unwrap_or_else(|| {
            let node_addr = info.as_ref().map(|i| i.node_addr.as_str()).unwrap_or("");
            flag_join_addr(&req, node_addr)
        });
    let mut text = init_text(&node_id, &token, &addr);
    if req.autolock {
        let key = fetch_unlock_key(daemon, false)
            .await
            .map_err(|e| e.context("could not fetch unlock key"))?;
        text.push_str(&unlock_text(&key));
    }
    print(out, &text)
}

async fn join(args: JoinArgs, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let remote_addr = with_default_port("HOST:PORT", &args.remote, SWARM_PORT)?;
    let listen_addr = with_default_port("--listen-addr", &args.listen_addr, SWARM_PORT)?;
    let advertise_addr = args.advertise_addr.unwrap_or_default();
    if !advertise_addr.is_empty() {
        optional_port("--advertise-addr", &advertise_addr)?;
    }
    let token = args.token.trim().to_string();
    check_token(&token)?;
    let req = SwarmJoin {
        token,
        remote_addr,
        advertise_addr,
        listen_addr,
    };
    match daemon.local(&LocalRequest::SwarmJoin(req)).await? {
        LocalResponse::Joined { .. } | LocalResponse::Done => {}
        _ => bail!("unexpected answer from shoald to swarm join"),
    }
    // The join is done; a failure to describe it must not turn it into an error.
    let info = daemon.info().await.ok();
    print(out, joined_text(info.as_ref()))
}

fn check_token(token: &str) -> Result<()> {
    let rest = token.strip_prefix(TOKEN_PREFIX);
    if rest.is_none_or(|r| r.split('-').filter(|p| !p.is_empty()).count() < 2) {
        bail!(
            "invalid join token {token:?}: it looks like SWMTKN-1-<digest>-<secret>; get one with 'shoal swarm join-token worker' on a manager"
        );
    }
    Ok(())
}

async fn join_token(args: JoinTokenArgs, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let role = NodeRole::from(args.role);
    let token = daemon
        .token(ControlRequest::JoinToken {
            role,
            rotate: args.rotate,
        })
        .await?;
    if args.quiet {
        return print(out, &format!("{token}\n"));
    }
    let mut text = String::new();
    if args.rotate {
        text.push_str(&format!("Successfully rotated {role} join token.\n\n"));
    }
    let info = daemon.info().await?;
    let node = match info.node_id.as_str() {
        "" => None,
        id => match daemon.node(id).await {
            Ok(node) => Some(node),
            Err(e @ DaemonError::Connect { .. }) => return Err(e.into()),
            Err(_) => None,
        },
    };
    let addr = resolve::join_addr(&info, node.as_ref())
        .unwrap_or_else(|| format!("MANAGER-IP:{SWARM_PORT}"));
    text.push_str(&join_command_text(role, &token, &addr));
    print(out, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> InitArgs {
        InitArgs {
            advertise_addr: None,
            listen_addr: DEFAULT_LISTEN_ADDR.into(),
            default_addr_pool: vec![],
            default_addr_pool_mask_length: 24,
            data_path_port: 4789,
            dynamic_port_range: None,
            autolock: None,
        }
    }

    #[test]
    fn init_defaults_are_dockers() {
        let req = init_request(&args()).unwrap();
        assert_eq!(
            req,
            SwarmInit {
                advertise_addr: String::new(),
                listen_addr: "0.0.0.0:2377".into(),
                default_addr_pool: vec!["10.0.0.0/8".into()],
                subnet_size: 24,
                data_path_port: 4789,
                dynamic_port_range: None,
                autolock: false,
            }
        );
    }

    #[test]
    fn init_checks_pools_and_mask() {
        let mut a = args();
        a.default_addr_pool = vec!["198.19.0.0/16".into()];
        a.default_addr_pool_mask_length = 8;
        assert_eq!(
            init_request(&a).unwrap_err().to_string(),
            "invalid --default-addr-pool-mask-length 8: subnets of pool 198.19.0.0/16 need a length from 16 to 32"
        );
        a.default_addr_pool = vec!["198.19.0.0".into()];
        assert!(
            init_request(&a)
                .unwrap_err()
                .to_string()
                .contains("missing /PREFIX")
        );
        a.default_addr_pool = vec!["198.19.0.0/16".into()];
        a.default_addr_pool_mask_length = 26;
        a.listen_addr = "198.18.0.1".into();
        let req = init_request(&a).unwrap();
        assert_eq!(req.listen_addr, "198.18.0.1:2377");
        assert_eq!(req.subnet_size, 26);
    }

    #[test]
    fn join_addr_from_flags_uses_the_listen_port() {
        let mut a = args();
        a.advertise_addr = Some("198.18.0.1".into());
        a.listen_addr = "0.0.0.0:4000".into();
        let req = init_request(&a).unwrap();
        assert_eq!(flag_join_addr(&req, ""), "198.18.0.1:4000");
        a.advertise_addr = Some("198.18.0.1:5000".into());
        let req = init_request(&a).unwrap();
        assert_eq!(flag_join_addr(&req, ""), "198.18.0.1:5000");
        a.advertise_addr = None;
        let req = init_request(&a).unwrap();
        assert_eq!(flag_join_addr(&req, "198.18.0.7"), "198.18.0.7:4000");
    }

    #[test]
    fn texts_match_docker() {
        assert_eq!(
            init_text("abc", "SWMTKN-1-x-y", "198.18.0.1:2377"),
            "Swarm initialized: current node (abc) is now a manager.\n\n\
             To add a worker to this swarm, run the following command:\n\n    \
             shoal swarm join --token SWMTKN-1-x-y 198.18.0.1:2377\n\n\
             To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n"
        );
        assert_eq!(
            join_command_text(NodeRole::Manager, "T", "A:1"),
            "To add a manager to this swarm, run the following command:\n\n    shoal swarm join --token T A:1\n\n"
        );
    }

    #[test]
    fn unlock_text_matches_docker() {
        assert_eq!(
            unlock_text("SWMKEY-1-abc"),
            "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n\
             command and provide the following key:\n\n    SWMKEY-1-abc\n\n\
             Remember to store this key in a password manager, since without it you\n\
             will not be able to restart the manager.\n"
        );
    }

    #[test]
    fn autolock_is_a_boolean_flag_as_in_docker() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut argv = vec!["shoal", "swarm"];
            argv.extend_from_slice(args);
            crate::Cli::try_parse_from(argv).map(|cli| cli.command)
        };
        let update = |args: &[&str]| match parse(args) {
            Ok(crate::Command::Swarm(SwarmCommand::Update(u))) => u.autolock,
            other => panic!("{args:?}: {other:?}"),
        };
        assert_eq!(update(&["update"]), None);
        assert_eq!(update(&["update", "--autolock"]), Some(true));
        assert_eq!(update(&["update", "--autolock=true"]), Some(true));
        assert_eq!(update(&["update", "--autolock=false"]), Some(false));
        // Like pflag's bool flags, the value is never the next word.
        assert!(parse(&["update", "--autolock", "false"]).is_err());
        assert!(parse(&["update", "--autolock=maybe"]).is_err());
        match parse(&["init", "--autolock"]) {
            Ok(crate::Command::Swarm(SwarmCommand::Init(a))) => {
                assert!(init_request(&a).unwrap().autolock)
            }
            other => panic!("{other:?}"),
        }
        assert!(!init_request(&args()).unwrap().autolock);
        match parse(&["unlock-key", "-q", "--rotate"]) {
            Ok(crate::Command::Swarm(SwarmCommand::UnlockKey(a))) => {
                assert!(a.quiet && a.rotate)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["unlock"]),
            Ok(crate::Command::Swarm(SwarmCommand::Unlock))
        ));
    }

    #[test]
    fn joined_text_follows_the_role() {
        let mut info = NodeInfo {
            local_node_state: "active".into(),
            node_id: "n".into(),
            cluster_id: "c".into(),
            control_available: false,
            node_addr: String::new(),
            remote_managers: vec![],
            node: None,
            held_secrets: vec![],
        };
        assert_eq!(
            joined_text(Some(&info)),
            "This node joined a swarm as a worker.\n"
        );
        info.control_available = true;
        assert_eq!(
            joined_text(Some(&info)),
            "This node joined a swarm as a manager.\n"
        );
        info.control_available = false;
        info.local_node_state = "pending".into();
        assert_eq!(joined_text(Some(&info)), "This node joined a swarm.\n");
        assert_eq!(joined_text(None), "This node joined a swarm.\n");
    }

    #[test]
    fn tokens_are_checked_before_sending() {
        assert!(check_token("SWMTKN-1-abc-def").is_ok());
        assert!(check_token("SWMTKN-1-abc").is_err());
        assert!(check_token("hello").is_err());
        assert_eq!(parse_port_range("30000-30010"), Ok((30000, 30010)));
        assert!(parse_port_range("30010-30000").is_err());
        assert!(parse_port_range("x").is_err());
    }
}

//! Control-plane benchmark: services created per second and create latency on 3 managers
//! (fsync on, 1 and 64 concurrent clients) beside a single manager, and leader failover
//! (SIGKILL to the first committed write) beside Swarm's default raft timing.
//!
//! `cargo build --release && target/release/bench_control [--write BENCHMARKS.md]`
//! Loopback only (127.0.0.101-106); every daemon is killed at the end.

use anyhow::{Context, Result, anyhow};
use shoal_api::control::{ControlRequest as C, ControlResponse as R};
use shoal_api::local::{LocalRequest, SwarmInit, SwarmJoin};
use shoal_api::objects::*;
use shoal_integration::{LocalCluster, eventually};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn spec(name: &str, network: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        labels: BTreeMap::new(),
        task_template: TaskSpec {
            container_spec: ContainerSpec {
                command: vec!["sleep".into(), "600".into()],
                ..Default::default()
            },
            runtime: Runtime::Native,
            networks: vec![NetworkAttachmentConfig {
                target: network.into(),
                aliases: vec![],
            }],
            ..Default::default()
        },
        // No replicas: the benchmark measures allocation and replication, not processes.
        mode: ServiceMode::Replicated { replicas: 0 },
        update_config: UpdateConfig::default(),
        rollback_config: None,
        endpoint_spec: EndpointSpec::default(),
    }
}

async fn form(c: &LocalCluster, managers: usize) -> Result<String> {
    let ip = c.nodes[0].ip.clone();
    c.local(
        0,
        LocalRequest::SwarmInit(SwarmInit {
            advertise_addr: ip.clone(),
            listen_addr: format!("{ip}:2377"),
            default_addr_pool: vec!["198.19.0.0/16".into()],
            subnet_size: 24,
            data_path_port: 4789,
            dynamic_port_range: None,
            autolock: false,
        }),
    )
    .await
    .map_err(|e| anyhow!("init: {}", e.message()))?;
    let R::Token(token) = c
        .control(
            0,
            C::JoinToken {
                role: NodeRole::Manager,
                rotate: false,
            },
        )
        .await
        .map_err(|e| anyhow!("{}", e.message()))?
    else {
        return Err(anyhow!("no token"));
    };
    for i in 1..managers {
        let ip = c.nodes[i].ip.clone();
        c.local(
            i,
            LocalRequest::SwarmJoin(SwarmJoin {
                token: token.clone(),
                remote_addr: c.nodes[0].grpc_addr(),
                advertise_addr: ip.clone(),
                listen_addr: format!("{ip}:2377"),
            }),
        )
        .await
        .map_err(|e| anyhow!("join: {}", e.message()))?;
    }
    let net = NetworkSpec {
        name: "bench".into(),
        labels: BTreeMap::new(),
        driver_configuration: Driver {
            name: "overlay".into(),
            options: BTreeMap::new(),
        },
        ingress: false,
        attachable: false,
        internal: false,
        ipam_options: IpamOptions {
            configs: vec![IpamConfig {
                subnet: "198.19.128.0/17".into(),
                gateway: String::new(),
                ip_range: String::new(),
            }],
        },
    };
    match c.control(0, C::NetworkCreate { spec: net }).await {
        Ok(R::Created { id }) => Ok(id),
        other => Err(anyhow!("network: {other:?}")),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Throughput {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Creates `total` services from `clients` concurrent clients through node 0.
async fn create_many(
    c: Arc<LocalCluster>,
    network: &str,
    prefix: &str,
    total: usize,
    clients: usize,
) -> Result<Throughput> {
    let started = Instant::now();
    let mut handles = Vec::new();
    for k in 0..clients {
        let c = c.clone();
        let network = network.to_string();
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            let mut client = shoal_api::client::connect_local(&c.nodes[0].host()).await?;
            let mut lat = Vec::new();
            for n in (k..total).step_by(clients) {
                let req = LocalRequest::Control(C::ServiceCreate {
                    spec: spec(&format!("{prefix}{n}"), &network),
                    registry_auth: None,
                });
                let t = Instant::now();
                shoal_api::client::call_local(&mut client, &req)
                    .await
                    .map_err(|e| anyhow!("create {prefix}{n}: {}", e.message()))?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let elapsed = started.elapsed();
    all.sort();
    Ok(Throughput {
        rate: total as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
    })
}

fn leader_index(c: &LocalCluster, nodes: &[Node]) -> Option<usize> {
    let leader = nodes
        .iter()
        .find(|n| n.manager_status.as_ref().is_some_and(|m| m.leader))?;
    c.nodes
        .iter()
        .position(|p| p.name == leader.description.hostname)
}

/// Kills the leader and times the first write committed by a survivor.
async fn failover_once(c: &mut LocalCluster, network: &str, run: usize) -> Result<Duration> {
    let nodes = eventually(
        Duration::from_secs(60),
        "a leader with all managers reachable",
        || async {
            let R::Nodes(n) = c.control(0, C::NodeList).await.ok()? else {
                return None;
            };
            let reachable = n
                .iter()
                .filter(|n| {
                    n.manager_status
                        .as_ref()
                        .is_some_and(|m| m.reachability == "reachable")
                })
                .count();
            (leader_index(c, &n).is_some() && reachable == 3).then_some(n)
        },
    )
    .await?;
    let leader = leader_index(c, &nodes).context("leader")?;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let killed = Instant::now();
    c.kill(leader);
    let mut attempt = 0;
    loop {
        for &i in &survivors {
            attempt += 1;
            let req = C::ServiceCreate {
                spec: spec(&format!("failover{run}-{attempt}"), network),
                registry_auth: None,
            };
            if tokio::time::timeout(Duration::from_millis(300), c.control(i, req))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                let took = killed.elapsed();
                c.restart(leader)?;
                return Ok(took);
            }
        }
        if killed.elapsed() > Duration::from_secs(120) {
            return Err(anyhow!(
                "no write committed within 120 s of the leader's loss"
            ));
        }
    }
}

async fn failover(tick_ms: u64, first_ip: u8) -> Result<Vec<Duration>> {
    let tick = tick_ms.to_string();
    let mut c = LocalCluster::start_with(3, first_ip, &["--raft-tick-ms", &tick])?;
    let network = form(&c, 3).await?;
    let mut times = Vec::new();
    for run in 0..RUNS {
        times.push(failover_once(&mut c, &network, run).await?);
    }
    times.sort();
    Ok(times)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), kernel {}", kernel.trim())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let write = std::env::args().skip_while(|a| a != "--write").nth(1);
    let date = String::from_utf8(
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()?
            .stdout,
    )?;
    let mut out = String::new();
    out.push_str(&format!(
        "## Control plane: service creation and leader failover\n\n{} · {} · `bench_control` (release build), raft fsync on every append, loopback, {RUNS} runs\n\n",
        machine(),
        date.trim()
    ));

    // Creation throughput: median of runs, 3 managers beside 1 manager.
    out.push_str(
        "Services created per second (each allocates a VIP; no replicas), median of runs:\n\n",
    );
    out.push_str("| managers | clients | services/s | p50 create | p99 create | vs 1 manager |\n|---|---|---|---|---|---|\n");
    let mut baseline: BTreeMap<usize, f64> = BTreeMap::new();
    for (managers, first_ip) in [(1usize, 101u8), (3, 111)] {
        for clients in [1usize, 64] {
            let mut runs = Vec::new();
            for run in 0..RUNS {
                let c = Arc::new(LocalCluster::start(managers, first_ip)?);
                let network = form(&c, managers).await?;
                let total = if clients == 1 { 500 } else { 3000 };
                runs.push(
                    create_many(c.clone(), &network, &format!("s{run}-"), total, clients).await?,
                );
            }
            runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            let m = &runs[runs.len() / 2];
            let base = *baseline.entry(clients).or_insert(m.rate);
            let line = format!(
                "| {managers} | {clients} | {:.0} | {} | {} | {:.2} |\n",
                m.rate,
                ms(m.p50),
                ms(m.p99),
                m.rate / base
            );
            eprint!("{line}");
            out.push_str(&line);
        }
    }

    out.push_str("\nLeader failover, SIGKILL of the leader to the first write committed by a survivor (3 managers):\n\n");
    out.push_str(
        "| raft timing | median | min | max | vs Swarm's timing |\n|---|---|---|---|---|\n",
    );
    let swarm = failover(1000, 121).await?;
    let ours = failover(50, 131).await?;
    let med = |v: &[Duration]| v[v.len() / 2];
    for (label, v) in [
        ("shoal default: tick 50 ms, election 10 ticks", &ours),
        ("Swarm's default: tick 1 s, election 10 ticks", &swarm),
    ] {
        let line = format!(
            "| {label} | {} | {} | {} | {:.2} |\n",
            ms(med(v)),
            ms(v[0]),
            ms(v[v.len() - 1]),
            med(v).as_secs_f64() / med(&swarm).as_secs_f64()
        );
        eprint!("{line}");
        out.push_str(&line);
    }
    println!("{out}");
    if let Some(path) = write {
        shoal_integration::write_bench_section(
            &path,
            "## Control plane: service creation and leader failover",
            &out,
        )?;
    }
    Ok(())
}

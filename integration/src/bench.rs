//! What the benchmark programs share: entering a namespace on a pinned core, and reading
//! how busy each core was.

use anyhow::{Context, Result};

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    Ok(())
}

/// Moves the calling thread into the network namespace at `path`, pinned to `cpu` if given.
pub fn enter_netns(path: &str, cpu: Option<usize>) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {path}"))?;
    match cpu {
        Some(cpu) => pin(cpu),
        None => Ok(()),
    }
}

/// Per core, from /proc/stat: (busy ticks, total ticks); idle and iowait count as idle.
pub fn cpu_times() -> Vec<(u64, u64)> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
}

/// The busy share of `cpu` between two `cpu_times` readings.
pub fn busy_share(a: &[(u64, u64)], b: &[(u64, u64)], cpu: usize) -> f64 {
    match (a.get(cpu), b.get(cpu)) {
        (Some(a), Some(b)) if b.1 > a.1 => b.0.saturating_sub(a.0) as f64 / (b.1 - a.1) as f64,
        _ => 0.0,
    }
}

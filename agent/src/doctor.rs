//! `shoal doctor`: what the kernel of this node offers the dataplane. Each probe reads what
//! the kernel publishes (`/proc/config.gz`, `/sys`, `/proc`) or runs the tool shoald uses,
//! and says how to fix what is missing.

use shoal_api::local::Check;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// `CONFIG_X=y|m` lines of a kernel config; options "not set" are absent.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The running kernel's config: `/proc/config.gz`, or the distribution's
/// `/boot/config-<release>` (Debian's kernels have no /proc/config.gz).
fn kernel_config() -> Option<BTreeMap<String, String>> {
    if let Ok(file) = std::fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(parse_config(&text));
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let text = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?;
    Some(parse_config(&text))
}

fn check(name: &str, present: bool, yes: &str, no: &str) -> Check {
    Check {
        name: name.into(),
        present,
        detail: if present { yes } else { no }.into(),
    }
}

/// Whether the kernel has `option` built in or as a module; None when the config is unknown.
fn has(config: &Option<BTreeMap<String, String>>, option: &str) -> Option<bool> {
    config
        .as_ref()
        .map(|c| c.get(option).is_some_and(|v| v == "y" || v == "m"))
}

/// Every capability the dataplane cares about, probed now.
pub fn checks() -> Vec<Check> {
    let config = kernel_config();
    let module = |m: &str| Path::new(&format!("/sys/module/{m}")).exists();
    // The host's mounts (pid 1's), not this process's: shoald may run under `ip netns
    // exec`, which mounts a fresh /sys without the cgroup and bpf file systems.
    let mounts = std::fs::read_to_string("/proc/1/mounts")
        .or_else(|_| std::fs::read_to_string("/proc/mounts"))
        .unwrap_or_default();
    let mounted = |fs: &str| {
        mounts
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some(fs))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    let vxlan = module("vxlan") || has(&config, "CONFIG_VXLAN") == Some(true);
    out.push(check(
        "vxlan",
        vxlan,
        "VXLAN overlays available",
        "no VXLAN in this kernel (CONFIG_VXLAN): overlays cannot work",
    ));
    // A listing can be interrupted by a concurrent change; try a few times.
    let nft = (0..3).any(|_| {
        std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    out.push(check(
        "nftables",
        nft,
        "nft works: the nftables load balancer is usable",
        "nft is missing or refused (install nftables; needs root and CONFIG_NF_TABLES)",
    ));
    let ipvs = Path::new("/proc/net/ip_vs").exists()
        || module("ip_vs")
        || has(&config, "CONFIG_IP_VS") == Some(true);
    out.push(check(
        "ipvs",
        ipvs,
        "IPVS present",
        "absent: this kernel has no IPVS (CONFIG_IP_VS is not set), so an IPVS dataplane is unavailable; nftables serves instead",
    ));
    let hooks = [
        ("CONFIG_BPF_SYSCALL", "bpf()"),
        ("CONFIG_CGROUP_BPF", "cgroup sock_addr hooks"),
        ("CONFIG_NET_CLS_BPF", "tc bpf classifier"),
        ("CONFIG_NET_SCH_INGRESS", "clsact"),
    ];
    let missing: Vec<&str> = hooks
        .iter()
        .filter(|(opt, _)| has(&config, opt) == Some(false))
        .map(|(_, what)| *what)
        .collect();
    out.push(match (&config, missing.is_empty()) {
        (None, _) => check(
            "ebpf-hooks",
            false,
            "",
            "unknown: /proc/config.gz is not readable here",
        ),
        (Some(_), true) => check(
            "ebpf-hooks",
            true,
            "bpf(), cgroup sock_addr hooks, tc bpf classifier and clsact",
            "",
        ),
        (Some(_), false) => Check {
            name: "ebpf-hooks".into(),
            present: false,
            detail: format!("missing: {}", missing.join(", ")),
        },
    });
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    out.push(check(
        "btf",
        btf,
        "/sys/kernel/btf/vmlinux",
        "no kernel BTF (CONFIG_DEBUG_INFO_BTF)",
    ));
    let bpffs = mounted("bpf");
    out.push(Check {
        name: "bpffs".into(),
        present: !bpffs.is_empty(),
        detail: match bpffs.first() {
            Some(at) => format!("mounted at {at}"),
            None => "not mounted; mount it with: mount -t bpf bpf /sys/fs/bpf".into(),
        },
    });
    let v2 = mounted("cgroup2");
    out.push(Check {
        name: "cgroup-v2".into(),
        present: !v2.is_empty(),
        detail: match v2.first().map(String::as_str) {
            Some("/sys/fs/cgroup") => "unified at /sys/fs/cgroup".into(),
            Some(at) => format!("hybrid: v2 at {at} (attach to a child cgroup)"),
            None => "no cgroup v2 hierarchy is mounted".into(),
        },
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_options_not_set_count_as_absent() {
        let c = Some(parse_config(
            "CONFIG_VXLAN=y\n# CONFIG_IP_VS is not set\nCONFIG_NET_CLS_BPF=m\nCONFIG_HZ=250\n",
        ));
        assert_eq!(has(&c, "CONFIG_VXLAN"), Some(true));
        assert_eq!(has(&c, "CONFIG_NET_CLS_BPF"), Some(true));
        assert_eq!(has(&c, "CONFIG_IP_VS"), Some(false));
        assert_eq!(has(&None, "CONFIG_IP_VS"), None);
    }
}

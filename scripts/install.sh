#!/usr/bin/env bash
# Installs shoal on this host: shoal and shoald to /usr/local/bin, the systemd unit to
# /etc/systemd/system (then daemon-reload and enable when systemd runs the machine).
# First checks what the kernel offers the dataplane, like `shoal doctor`: refuses without
# VXLAN or nftables, warns when bpffs, cgroup v2, IPVS, eBPF hooks or BTF are missing.
#
#   scripts/install.sh [--check-only] [--prefix DIR] [BINDIR]
#
# BINDIR holds shoal and shoald (default: target/release of this repository, from
# `cargo build --release`). --prefix DIR installs under DIR instead of / and enables
# nothing (for packaging and tests). --check-only prints the checks and installs nothing.
#
# For tests only: SHOAL_KCONFIG (a kernel config file; the live kernel is then not probed),
# SHOAL_SYSFS (instead of /sys), SHOAL_MOUNTS (instead of /proc/1/mounts), SHOAL_NFT (the
# nft command).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
check_only=0
prefix=/
bindir=

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

while [ $# -gt 0 ]; do
  case $1 in
    --check-only) check_only=1 ;;
    --prefix)
      [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
      prefix=$2
      shift
      ;;
    --prefix=*) prefix=${1#--prefix=} ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      [ -z "$bindir" ] || { echo "install.sh: one binary directory only, got $bindir and $1" >&2; exit 2; }
      bindir=$1
      ;;
  esac
  shift
done

# ---- kernel checks (the same probes as agent/src/doctor.rs) ----

sysfs=${SHOAL_SYSFS:-/sys}
nft=${SHOAL_NFT:-nft}
kconfig=
kconfig_from=
if [ -n "${SHOAL_KCONFIG:-}" ]; then
  kconfig=$(cat "$SHOAL_KCONFIG")
  kconfig_from=$SHOAL_KCONFIG
elif [ -r /proc/config.gz ] && kconfig=$(zcat /proc/config.gz 2>/dev/null); then
  kconfig_from=/proc/config.gz
elif [ -r "/boot/config-$(uname -r)" ]; then
  # Debian's kernels have no /proc/config.gz; they ship their config in /boot.
  kconfig=$(cat "/boot/config-$(uname -r)")
  kconfig_from=/boot/config-$(uname -r)
fi

# config OPTION: 0 when built in or a module, 1 when not, 2 when the config is unknown.
config() {
  [ -n "$kconfig_from" ] || return 2
  grep -qE "^$1=(y|m)\$" <<<"$kconfig"
}
module_loaded() { [ -e "$sysfs/module/$1" ]; }
# Whether modprobe could load (or finds built in) a module; only for the live kernel.
module_available() {
  [ -z "${SHOAL_KCONFIG:-}" ] && command -v modprobe >/dev/null 2>&1 && modprobe -n -q "$1" 2>/dev/null
}
# The host's mounts (pid 1's), not ours: under `ip netns exec` /sys is a fresh mount.
mounts_file=${SHOAL_MOUNTS:-/proc/1/mounts}
[ -r "$mounts_file" ] || mounts_file=/proc/mounts
mounted_at() { awk -v fs="$1" '$3 == fs { print $2 }' "$mounts_file"; }

refusals=()
warnings=0
echo "kernel $(uname -r), config from ${kconfig_from:-nowhere (no /proc/config.gz, no /boot/config-$(uname -r))}"
report() { # LEVEL NAME DETAIL
  printf '  %-8s %-11s %s\n' "$1" "$2" "$3"
}

vxlan=0
if module_loaded vxlan || config CONFIG_VXLAN || module_available vxlan; then
  vxlan=1
elif [ -z "${SHOAL_KCONFIG:-}" ] && [ -z "$kconfig_from" ] && command -v unshare >/dev/null 2>&1 &&
  unshare --net ip link add shoalchk0 type vxlan id 42 dstport 4789 2>/dev/null; then
  # No config to read: a VXLAN device in a throwaway network namespace settles it.
  vxlan=1
fi
if [ "$vxlan" = 1 ]; then
  report ok vxlan "VXLAN overlays available"
else
  report missing vxlan "no VXLAN in this kernel (CONFIG_VXLAN): overlays cannot work"
  refusals+=("no VXLAN in this kernel (CONFIG_VXLAN): use a kernel built with CONFIG_VXLAN=m or =y (Debian's linux-image-amd64 has it)")
fi

if ! command -v "$nft" >/dev/null 2>&1; then
  report missing nftables "the nft command is not installed"
  refusals+=("nft is not installed: apt-get install nftables")
else
  nft_ok=0
  # A listing can be interrupted by a concurrent change; try a few times.
  for _ in 1 2 3; do
    if nft_err=$("$nft" list tables 2>&1 >/dev/null); then nft_ok=1; break; fi
  done
  nft_err=${nft_err%%$'\n'*}
  nft_err=${nft_err:-exit status non-zero, no message}
  if [ "$nft_ok" = 1 ]; then
    report ok nftables "nft works: the nftables load balancer is usable"
  elif [ "$(id -u)" -ne 0 ]; then
    # Not a verdict on the kernel: a plain user may not list tables. Installing to /
    # needs root anyway, and is refused below.
    report warning nftables "not checked: nft list tables needs root ($nft_err); run as root to check"
    warnings=$((warnings + 1))
  else
    report missing nftables "nft list tables failed: $nft_err"
    refusals+=("nftables does not work here (nft list tables: $nft_err): use a kernel with CONFIG_NF_TABLES and its nf_tables module")
  fi
fi

# Under nftables or iptables, UDP flows to a task that left are forgotten with conntrack -D.
if command -v conntrack >/dev/null 2>&1; then
  report ok conntrack "conntrack is installed: UDP flows to removed tasks are forgotten"
else
  report warning conntrack "conntrack is not installed: under nftables or iptables, a UDP flow to a removed task stays until it goes idle (apt-get install conntrack)"
  warnings=$((warnings + 1))
fi

if [ -e /proc/net/ip_vs ] && [ -z "${SHOAL_KCONFIG:-}" ] || module_loaded ip_vs || config CONFIG_IP_VS ||
  module_available ip_vs; then
  report ok ipvs "IPVS present"
else
  report warning ipvs "IPVS absent: this kernel has no IPVS (CONFIG_IP_VS is not set), so an IPVS dataplane is unavailable; nftables serves instead"
  warnings=$((warnings + 1))
fi

if [ -n "$kconfig_from" ]; then
  missing_hooks=()
  config CONFIG_BPF_SYSCALL || missing_hooks+=("bpf() (CONFIG_BPF_SYSCALL)")
  config CONFIG_CGROUP_BPF || missing_hooks+=("cgroup sock_addr hooks (CONFIG_CGROUP_BPF)")
  config CONFIG_NET_CLS_BPF || missing_hooks+=("tc bpf classifier (CONFIG_NET_CLS_BPF)")
  config CONFIG_NET_SCH_INGRESS || missing_hooks+=("clsact (CONFIG_NET_SCH_INGRESS)")
  if [ "${#missing_hooks[@]}" -eq 0 ]; then
    report ok ebpf-hooks "bpf(), cgroup sock_addr hooks, tc bpf classifier and clsact"
  else
    joined=$(printf '%s, ' "${missing_hooks[@]}")
    report warning ebpf-hooks "missing: ${joined%, }; the eBPF dataplane is unavailable"
    warnings=$((warnings + 1))
  fi
else
  report warning ebpf-hooks "unknown: no kernel config in /proc/config.gz or /boot/config-$(uname -r)"
  warnings=$((warnings + 1))
fi

if [ -e "$sysfs/kernel/btf/vmlinux" ]; then
  report ok btf "$sysfs/kernel/btf/vmlinux"
else
  report warning btf "no kernel BTF (CONFIG_DEBUG_INFO_BTF): the eBPF dataplane is unavailable"
  warnings=$((warnings + 1))
fi

bpffs=$(mounted_at bpf | head -1)
if [ -n "$bpffs" ]; then
  report ok bpffs "mounted at $bpffs"
else
  report warning bpffs "not mounted; mount it with: mount -t bpf bpf /sys/fs/bpf"
  warnings=$((warnings + 1))
fi

cgroup2=$(mounted_at cgroup2 | head -1)
case $cgroup2 in
  /sys/fs/cgroup) report ok cgroup-v2 "unified at /sys/fs/cgroup" ;;
  "")
    report warning cgroup-v2 "no cgroup v2 hierarchy is mounted; boot with systemd.unified_cgroup_hierarchy=1"
    warnings=$((warnings + 1))
    ;;
  *) report ok cgroup-v2 "hybrid: v2 at $cgroup2 (attach to a child cgroup)" ;;
esac

# Docker sets the FORWARD policy to DROP (and loads br_netfilter, so bridged frames pass
# FORWARD too): without an accept for shoal's bridges (sb<VNI>), overlay traffic between
# nodes and routing-mesh traffic to tasks is dropped.
if [ -z "${SHOAL_KCONFIG:-}" ] && [ "$(id -u)" -eq 0 ] && command -v iptables >/dev/null 2>&1 &&
  iptables -S FORWARD 2>/dev/null | grep -qx -- '-P FORWARD DROP'; then
  if iptables -C DOCKER-USER -i 'sb+' -j ACCEPT 2>/dev/null && iptables -C DOCKER-USER -o 'sb+' -j ACCEPT 2>/dev/null; then
    report ok forward "FORWARD policy is DROP; DOCKER-USER accepts shoal's bridges (sb+)"
  else
    report warning forward "FORWARD policy is DROP (Docker): accept shoal's bridges with: iptables -I DOCKER-USER -i sb+ -j ACCEPT; iptables -I DOCKER-USER -o sb+ -j ACCEPT"
    warnings=$((warnings + 1))
  fi
fi

echo "${#refusals[@]} missing, $warnings warnings"

if [ "${#refusals[@]}" -gt 0 ]; then
  msg=$(printf '%s; ' "${refusals[@]}")
  echo "install.sh: refusing to install: ${msg%; }" >&2
  exit 1
fi
[ "$check_only" = 0 ] || exit 0

# ---- install ----

[ -n "$bindir" ] || bindir=$repo/target/release
for b in shoal shoald; do
  if [ ! -x "$bindir/$b" ] || [ -d "$bindir/$b" ]; then
    if [ "$bindir" = "$repo/target/release" ]; then
      echo "install.sh: no executable $bindir/$b: run cargo build --release first, or name the directory holding shoal and shoald" >&2
    else
      echo "install.sh: no executable $bindir/$b: name the directory holding shoal and shoald" >&2
    fi
    exit 1
  fi
done
unit_src=$repo/packaging/shoald.service
[ -r "$unit_src" ] || { echo "install.sh: $unit_src is missing" >&2; exit 1; }

root=${prefix%/}
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: installing to /usr/local/bin and /etc/systemd/system needs root (or use --prefix DIR)" >&2
  exit 1
fi

# Copy next to the target, then rename: replacing a running shoald in place would fail
# (text file busy) or leave a half-written binary.
put() { # SRC DEST MODE
  local tmp
  install -d -m 0755 "$(dirname "$2")"
  tmp=$(dirname "$2")/.$(basename "$2").install.$$
  install -m "$3" "$1" "$tmp"
  mv -f "$tmp" "$2"
  echo "installed $2"
}
put "$bindir/shoal" "$root/usr/local/bin/shoal" 0755
put "$bindir/shoald" "$root/usr/local/bin/shoald" 0755
put "$unit_src" "$root/etc/systemd/system/shoald.service" 0644

if [ -n "$root" ]; then
  echo "installed under $root; nothing enabled or started"
elif [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --quiet shoald.service
  if systemctl is-active --quiet shoald.service; then
    echo "shoald is enabled and running; to run the installed binary, restart it (its tasks keep running): systemctl restart shoald"
  else
    echo "shoald is enabled; start it: systemctl start shoald"
  fi
else
  echo "systemd is not running this machine; start shoald by hand (as root):"
  echo "  mkdir -p /var/lib/shoal && nohup /usr/local/bin/shoald --state-dir /var/lib/shoal --socket /run/shoal/shoald.sock >>/var/log/shoald.log 2>&1 &"
fi

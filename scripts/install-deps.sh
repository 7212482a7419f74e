#!/usr/bin/env bash
# Installs what shoal's tests and demo need on a fresh Debian machine (as root).
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
# Forgets UDP flows to removed tasks under the nftables and iptables dataplanes.
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
# The eBPF programs are built from C by the workspace build; bpftool checks them in tests.
command -v clang-19 >/dev/null 2>&1 || missing+=(clang-19)
[ -e /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
command -v bpftool >/dev/null 2>&1 || missing+=(bpftool)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# eBPF maps and links are pinned on bpffs (shoald mounts it too when it is missing).
if ! grep -q ' /sys/fs/bpf bpf ' /proc/mounts; then
  mount -t bpf bpf /sys/fs/bpf
fi
# The Docker executor's tests need an engine that answers and a local image (no registry).
bash "$(dirname "$0")/docker-engine.sh"
if command -v docker >/dev/null 2>&1; then
  bash "$(dirname "$0")/test-image.sh"
fi

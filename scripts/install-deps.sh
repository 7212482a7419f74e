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
# A real registry for the Docker executor's image-pull test (started by the test itself on
# 127.0.0.1; the package's own service is not needed).
dpkg -s docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
# bcrypt htpasswd entries for the registry-auth test's password-protected registry.
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
# The fault suite jumps one node's wall clock with libfaketime (LD_PRELOAD).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(libfaketime)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  # Where systemd runs, the package starts a registry on port 5000: the tests start their own.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi
# eBPF maps and links are pinned on bpffs (shoald mounts it too when it is missing).
if ! grep -q ' /sys/fs/bpf bpf ' /proc/mounts; then
  mount -t bpf bpf /sys/fs/bpf
fi
# docker-py (PyPI `docker`) is a real client of shoald's Engine API in the tests.
if ! python3 -c 'import docker' >/dev/null 2>&1; then
  python3 -m pip install -q 'docker>=7,<8'
fi
# The Docker executor's tests need an engine that answers and a local image (no registry).
bash "$(dirname "$0")/docker-engine.sh"
if command -v docker >/dev/null 2>&1; then
  bash "$(dirname "$0")/test-image.sh"
fi

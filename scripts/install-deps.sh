#!/usr/bin/env bash
# Installs what shoal's tests and demo need on a fresh Debian machine (as root).
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# The Docker executor's tests need a local image (no registry here).
if command -v docker >/dev/null 2>&1; then
  bash "$(dirname "$0")/test-image.sh"
fi

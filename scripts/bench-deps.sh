#!/usr/bin/env bash
# Installs what bench_dns compares shoal's DNS server with (as root, Debian): dnsperf, the
# load generator; aardvark-dns (Podman's container DNS) and unbound, the baselines. The
# benchmark starts its own instances inside a network namespace; the unbound package's
# system-wide service is kept from starting, and stopped if it was started anyway.
set -euo pipefail
missing=()
command -v dnsperf >/dev/null 2>&1 || missing+=(dnsperf)
[ -x /usr/libexec/podman/aardvark-dns ] || command -v aardvark-dns >/dev/null 2>&1 ||
  missing+=(aardvark-dns)
command -v unbound >/dev/null 2>&1 || missing+=(unbound)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
[ "${#missing[@]}" -eq 0 ] && exit 0

# Services may not start during the install (policy-rc.d exit 101); keep an existing policy.
policy=/usr/sbin/policy-rc.d
ours=no
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  ours=yes
fi
trap '[ "$ours" = yes ] && rm -f "$policy"' EXIT

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Under systemd the unit may still be enabled for the next boot: disable and stop it.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now unbound.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/unbound ]; then
  /etc/init.d/unbound stop >/dev/null 2>&1 || true
  command -v update-rc.d >/dev/null 2>&1 && update-rc.d unbound disable >/dev/null 2>&1 || true
fi

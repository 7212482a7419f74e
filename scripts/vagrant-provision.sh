#!/usr/bin/env bash
# Provisions one VM of the Vagrant testbed (see Vagrantfile), as root; safe to run again.
#
#   vagrant-provision.sh init|manager|worker ADVERTISE_ADDR FIRST_MANAGER:2377 ADDR_POOL
#
# Installs Docker, iproute2 and nftables, installs shoal and shoald from
# /vagrant/target/release with scripts/install.sh, (re)starts shoald, then: `init` runs
# `shoal swarm init` once and writes the join tokens and the cluster id to
# /vagrant/.vagrant-shoal/; `manager` and `worker` join with the matching token unless
# the node is already in that cluster.
set -euo pipefail
role=$1
addr=$2
first=$3
pool=$4
tokens=/vagrant/.vagrant-shoal
export SHOAL_HOST=unix:///run/shoal/shoald.sock

say() { echo "shoal provision ($(hostname), $role): $*"; }
die() { echo "shoal provision ($(hostname), $role): $*" >&2; exit 1; }

# 1. Packages.
need=()
for p in docker.io iproute2 nftables conntrack jq; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Without a Docker engine shoald still runs native tasks (--executor auto).
systemctl enable --now --quiet docker.service ||
  say "warning: docker.service did not start (journalctl -u docker): image tasks will be refused on this node"

# 2. Docker sets the FORWARD policy to DROP and loads br_netfilter, which would drop
# overlay and routing-mesh traffic through shoal's bridges (sb<VNI>): accept it in
# DOCKER-USER every time shoald starts (the rules do not survive a reboot).
mkdir -p /etc/systemd/system/shoald.service.d
cat >/etc/systemd/system/shoald.service.d/10-docker-forward.conf <<'EOF'
# Written by scripts/vagrant-provision.sh (the shoal Vagrant testbed).
[Service]
ExecStartPre=-/bin/sh -c 'for d in -i -o; do iptables -C DOCKER-USER $$d sb+ -j ACCEPT 2>/dev/null || iptables -I DOCKER-USER $$d sb+ -j ACCEPT; done'
EOF

# 3. Binaries and the unit (refuses when the kernel lacks VXLAN or nftables).
bash /vagrant/scripts/install.sh /vagrant/target/release
systemctl daemon-reload
# A restart picks up new binaries; tasks keep running and are adopted (KillMode=process).
systemctl restart shoald.service

for _ in $(seq 1 60); do
  info=$(shoal info 2>/dev/null) && break
  sleep 0.5
done
[ -n "${info:-}" ] || die "shoald does not answer on /run/shoal/shoald.sock: journalctl -u shoald"
state=$(jq -r .LocalNodeState <<<"$info")
cluster=$(jq -r .ClusterID <<<"$info")

# 4. The swarm.
if [ "$role" = init ]; then
  if [ "$state" = inactive ]; then
    shoal swarm init --advertise-addr "$addr" --default-addr-pool "$pool" >/dev/null
    cluster=$(shoal info | jq -r .ClusterID)
    say "swarm initialized (cluster $cluster)"
  else
    say "already $state in cluster $cluster"
  fi
  install -d -m 0700 "$tokens"
  (
    umask 077
    shoal swarm join-token -q worker >"$tokens/worker.token"
    shoal swarm join-token -q manager >"$tokens/manager.token"
    echo "$cluster" >"$tokens/cluster.id"
  )
else
  if [ ! -s "$tokens/$role.token" ] || [ ! -s "$tokens/cluster.id" ]; then
    die "no join token in $tokens: bring up manager1 first (vagrant up manager1), then: vagrant provision $(hostname)"
  fi
  want=$(cat "$tokens/cluster.id")
  if [ "$state" = active ] && [ "$cluster" = "$want" ]; then
    say "already in cluster $cluster"
  else
    if [ "$state" != inactive ]; then
      # A node of an earlier cluster (manager1 was re-created): start over.
      say "leaving cluster $cluster ($state) to join $want"
      shoal swarm leave --force >/dev/null
    fi
    # manager1 may still be starting its listener after a reboot: try for a minute.
    for try in $(seq 1 12); do
      if out=$(shoal swarm join --token "$(cat "$tokens/$role.token")" "$first" --advertise-addr "$addr" 2>&1); then
        break
      fi
      [ "$try" -lt 12 ] || die "shoal swarm join $first failed: $out"
      sleep 5
    done
    say "joined $first as a $role"
  fi
fi

if [ "$role" != worker ]; then
  shoal node ls
fi

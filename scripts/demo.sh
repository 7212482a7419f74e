#!/usr/bin/env bash
# The main job: a local 3-node swarm (network namespaces on 198.18.0.0/16, one shoald per
# node) running a demo service, shown and then removed. KEEP=1 leaves it up; remove it
# later with `./target/debug/shoal dev down`. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --workspace
shoal=./target/debug/shoal
dir=/run/shoal-dev
$shoal dev down --dir "$dir" >/dev/null 2>&1 || true
$shoal dev up --nodes 3 --managers 1 --dir "$dir"
[ "${KEEP:-0}" = 1 ] || trap '$shoal dev down --dir "$dir"' EXIT
m="$shoal -H unix://$dir/node-1/shoald.sock"
$m network create -d overlay --subnet 198.19.10.0/24 demo >/dev/null
$m service create --runtime native --name web --replicas 3 --network demo --publish 8080:80 \
  sh -c 'echo "task $SHOAL_TASK_ID (slot $SHOAL_TASK_SLOT) up"; exec sleep 3600' >/dev/null
for _ in $(seq 50); do $m service ls | grep -q ' 3/3 ' && break; sleep 0.2; done
echo; $m node ls
echo; $m service ls
echo; $m service ps web
echo; $m service inspect web | grep -A4 '"VirtualIPs"'

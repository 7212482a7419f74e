#!/usr/bin/env bash
# A local single-manager swarm with one native service, on 127.0.0.61. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace
dir=$(mktemp -d /tmp/shoal-demo.XXXX)
./target/debug/shoald --state-dir "$dir/state" --socket "$dir/shoald.sock" --hostname demo-1 &
pid=$!
trap 'kill $pid; pkill -f "SHOAL_TASK_DIR=$dir" || true; rm -rf "$dir"' EXIT
while [ ! -S "$dir/shoald.sock" ]; do sleep 0.1; done
shoal() { ./target/debug/shoal -H "unix://$dir/shoald.sock" "$@"; }
shoal swarm init --advertise-addr 127.0.0.61 --listen-addr 127.0.0.61:2377 --default-addr-pool 198.19.0.0/16
shoal service create --runtime native --name web --replicas 2 --publish 8080:80 sleep 600
sleep 2
shoal node ls
shoal service ls
shoal service ps web
echo "demo running; Ctrl-C to stop"
wait $pid

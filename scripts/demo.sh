#!/usr/bin/env bash
# A local single-manager swarm with one native service, on 127.0.0.61: shows it, then
# removes it. KEEP=1 keeps it running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace
dir=$(mktemp -d /tmp/shoal-demo.XXXX)
./target/debug/shoald --state-dir "$dir/state" --socket "$dir/shoald.sock" --hostname demo-1 &
pid=$!
cleanup() {
  # Leaving the swarm stops the tasks; then the daemon goes.
  ./target/debug/shoal -H "unix://$dir/shoald.sock" swarm leave --force >/dev/null 2>&1 || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
while [ ! -S "$dir/shoald.sock" ]; do sleep 0.1; done
shoal() { ./target/debug/shoal -H "unix://$dir/shoald.sock" "$@"; }
shoal swarm init --advertise-addr 127.0.0.61 --listen-addr 127.0.0.61:2377 --default-addr-pool 198.19.0.0/16
shoal service create --runtime native --name web --replicas 2 --publish 8080:80 sleep 600
sleep 2
shoal node ls
shoal service ls
shoal service ps web
if [ "${KEEP:-0}" = 1 ]; then
  echo "demo running: ./target/debug/shoal -H unix://$dir/shoald.sock ...; Ctrl-C to stop"
  trap 'exit 0' INT TERM
  wait "$pid"
fi

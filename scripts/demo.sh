#!/usr/bin/env bash
# The main job: a local 3-node swarm (network namespaces on 198.18.0.0/16, one shoald per
# node) running a demo service on an overlay network; shows the cluster, the service, the
# tasks' output, and answers obtained over VXLAN from one task to every other; then removes
# everything. KEEP=1 leaves it up (remove it with `./target/debug/shoal dev down`). Root.
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
# A tiny TCP server: says which task answered and who called.
server='import os, socket
ip = [l.split()[3].split("/")[0] for l in os.popen("ip -4 -o addr show dev eth0")][0]
print("task", os.environ["SHOAL_TASK_SLOT"], "listening on", ip, flush=True)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen()
while True:
    c, a = s.accept(); c.sendall(("hello from task %s (%s) to %s\n" % (os.environ["SHOAL_TASK_SLOT"], ip, a[0])).encode()); c.close()'
$m service create --runtime native --name web --replicas 3 --network demo --publish 8080:8080 \
  python3 -c "$server" >/dev/null
for _ in $(seq 100); do $m service ls | grep -q ' 3/3 ' && break; sleep 0.2; done
echo; $m node ls
echo; $m service ls
echo; $m service ps web
echo; $m service logs web
ips=$($m service logs web | awk '{print $NF}')
pid=$(pgrep -f 'listening on' | head -1)
echo; echo "From one task, over the overlay, to every task:"
for ip in $ips; do
  nsenter -t "$pid" -n python3 -c "import socket; print(socket.create_connection(('$ip', 8080), timeout=2).recv(200).decode().strip())"
done

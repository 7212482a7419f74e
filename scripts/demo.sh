#!/usr/bin/env bash
# The main job: a local 3-node swarm (network namespaces on 198.18.0.0/16, one shoald per
# node) running `web`, 3 replicas of a tiny HTTP server that answers with its task name,
# published on port 8080 through the routing mesh. Prints the cluster, the service, the
# answers through each node's published port (from a client outside the cluster), through
# the VIP from a task, and a DNS lookup from inside a task; then removes everything.
# KEEP=1 leaves it up (remove it with `./target/debug/shoal dev down`). Root.
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
server='import http.server, os
name = "web.%s.%s" % (os.environ["SHOAL_TASK_SLOT"], os.environ["SHOAL_TASK_ID"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%s (client %s)\n" % (name, self.client_address[0])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print(name, "serving on port 80", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()'
$m service create --runtime native --name web --replicas 3 --network demo --publish 8080:80 \
  python3 -c "$server" >/dev/null
$m service create --runtime native --name client --network demo sleep 86400 >/dev/null
for _ in $(seq 150); do
  [ "$($m service ls | grep -c ' 3/3 \| 1/1 ')" = 2 ] && break
  sleep 0.2
done
echo; $m node ls
echo; $m service ls
echo; $m service ps web

# A client outside the cluster, on the underlay (removed by `shoal dev down`).
out=shoaldev-out
ip netns add $out
ip -n shoaldev-ul link add cout type veth peer name eth0 netns $out
ip -n shoaldev-ul link set cout master br0 up
ip -n $out addr add 198.18.0.250/16 dev eth0
ip -n $out link set eth0 up
get='import sys, urllib.request
for _ in range(int(sys.argv[2])):
    try:
        print("  ", urllib.request.urlopen(sys.argv[1], timeout=3).read().decode().strip())
    except Exception as e:
        print("   error:", e)'
for i in 1 2 3; do
  echo; echo "Published port 8080 on node-$i (198.18.0.$i), from 198.18.0.250 outside the cluster:"
  ip netns exec $out python3 -c "$get" "http://198.18.0.$i:8080/" 3
done

pid=$(pgrep -f 'sleep 86400' | head -1)
vip=$($m service inspect web | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]; print([v["Addr"] for v in s["Endpoint"]["VirtualIPs"]][0].split("/")[0])')
echo; echo "From the client task, through the VIP of web:"
nsenter -t "$pid" -n -m python3 -c "$get" "http://web/" 3
echo; echo "DNS from inside the client task (127.0.0.11):"
nsenter -t "$pid" -n -m python3 -c '
import socket
for name in ("web", "tasks.web"):
    print("  ", name, "->", sorted(socket.gethostbyname_ex(name)[2]))'
echo "   (VIP of web: $vip)"

#!/usr/bin/env bash
# Makes sure a Docker engine answers (the Docker executor's tests and the demo's container
# service need one). On these machines the engine is normally started before anything else,
# but nothing guarantees it: when `docker info` fails, start it the way the machine can
# (systemd, the init script, or dockerd by hand) and wait for it. Installs Debian's
# docker.io when there is no engine at all. Root. Never fails: a missing engine is reported,
# and the tests that need it fail under CI=true with their own reason.
set -uo pipefail
answers() { docker info >/dev/null 2>&1; }
command -v docker >/dev/null 2>&1 && answers && exit 0
if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker-engine: no dockerd here; installing Debian's docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null || true
fi
command -v dockerd >/dev/null 2>&1 || { echo "docker-engine: dockerd could not be installed"; exit 0; }
if answers; then exit 0; fi
echo "docker-engine: no engine answers; starting one"
wait_for() {
  for _ in $(seq "$1"); do answers && return 0; sleep 1; done
  return 1
}
started=no
if [ -d /run/systemd/system ] && systemctl start docker >/dev/null 2>&1 && wait_for 30; then
  started=yes
fi
if [ "$started" = no ]; then
  # No service manager here (PID 1 is not systemd and the init script may not work):
  # start dockerd detached, with its log where a failure can be read.
  log=/var/log/shoal-dockerd.log
  pgrep -x dockerd >/dev/null || setsid nohup dockerd >"$log" 2>&1 </dev/null &
  if ! wait_for 60; then
    echo "docker-engine: dockerd did not answer within 60 s; its log ends with:"
    tail -n 20 "$log" 2>/dev/null
    exit 0
  fi
fi
echo "docker-engine: $(docker version --format 'engine {{.Server.Version}}' 2>/dev/null) answers"

#!/usr/bin/env bash
# Builds the local test image shoal-test-busybox:latest (FROM scratch + Debian's static
# busybox: sh, httpd, nc, nslookup, wget, ...) when a Docker engine answers and the image is
# missing. No registry is involved. Root.
set -euo pipefail
image=shoal-test-busybox:latest
docker info >/dev/null 2>&1 || { echo "test-image: no Docker engine; skipping $image"; exit 0; }
# A second tag with an image-level STOPSIGNAL, for the stop-signal test.
stopsignal() {
  docker image inspect shoal-test-busybox:stopsignal >/dev/null 2>&1 && return 0
  local c
  c=$(mktemp -d)
  printf 'FROM %s\nSTOPSIGNAL SIGUSR1\n' "$image" > "$c/Dockerfile"
  docker build -q -t shoal-test-busybox:stopsignal "$c" >/dev/null
  rm -rf "$c"
  echo "built shoal-test-busybox:stopsignal"
}
if docker image inspect "$image" >/dev/null 2>&1; then
  stopsignal
  exit 0
fi
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/rootfs/www"
cp /bin/busybox "$ctx/rootfs/bin/busybox"
for cmd in $("$ctx/rootfs/bin/busybox" --list); do
  [ "$cmd" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$cmd"
done
echo 'root:x:0:0:root:/:/bin/sh' > "$ctx/rootfs/etc/passwd"
printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD ["sh"]\n' > "$ctx/Dockerfile"
docker build -q -t "$image" "$ctx" >/dev/null
echo "built $image"
stopsignal

#!/usr/bin/env bash
# Tests scripts/install.sh: its kernel checks on this machine, refusals on a kernel
# without VXLAN or nftables (a fake config), and an install of stub binaries under a
# temporary prefix. Touches nothing outside that temporary directory.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1" >&2; failed=$((failed + 1)); }
# run NAME ARGS...: runs install.sh, keeps its status, stdout and stderr.
run() {
  local name=$1
  shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  echo $? >"$tmp/$name.rc"
}
rc() { cat "$tmp/$1.rc"; }
show() { sed 's/^/    /' "$tmp/$1.out" "$tmp/$1.err" >&2; }
mode() { stat -c %a "$1"; }

# 1. This machine: everything required is there, IPVS is not.
run check bash scripts/install.sh --check-only
if [ "$(rc check)" = 0 ]; then ok "--check-only exits 0 here"; else fail "--check-only exited $(rc check)"; show check; fi
if grep -Eiq '^ +warning +ipvs +IPVS absent' "$tmp/check.out"; then
  ok "--check-only reports IPVS absent"
else
  fail "--check-only does not report IPVS absent"; show check
fi
if grep -Eq '^ +ok +vxlan' "$tmp/check.out" && grep -Eq '^ +ok +nftables' "$tmp/check.out"; then
  ok "--check-only finds VXLAN and nftables"
else
  fail "--check-only misses VXLAN or nftables"; show check
fi
if grep -q '^installed' "$tmp/check.out"; then fail "--check-only installed something"; show check; else ok "--check-only installs nothing"; fi

# 2. A kernel without VXLAN (fake config, empty sysfs): refused in one line, nothing installed.
mkdir -p "$tmp/bin" "$tmp/sys/module"
printf '#!/bin/sh\necho stub shoal\n' >"$tmp/bin/shoal"
printf '#!/bin/sh\necho stub shoald\n' >"$tmp/bin/shoald"
# Private modes on the stubs: install must set 0755, not copy the source's mode.
chmod 0700 "$tmp/bin/shoal" "$tmp/bin/shoald"
cat >"$tmp/config" <<'EOF'
CONFIG_NF_TABLES=m
# CONFIG_VXLAN is not set
# CONFIG_IP_VS is not set
CONFIG_BPF_SYSCALL=y
EOF
printf 'proc /proc proc rw 0 0\n' >"$tmp/mounts"
fake=(env SHOAL_KCONFIG="$tmp/config" SHOAL_SYSFS="$tmp/sys" SHOAL_MOUNTS="$tmp/mounts")
run novxlan "${fake[@]}" bash scripts/install.sh --prefix "$tmp/novxlan" "$tmp/bin"
if [ "$(rc novxlan)" != 0 ] && [ "$(wc -l <"$tmp/novxlan.err")" = 1 ] &&
  grep -q 'refusing to install: no VXLAN in this kernel (CONFIG_VXLAN): use a kernel built with CONFIG_VXLAN' "$tmp/novxlan.err"; then
  ok "no VXLAN: refused in one line naming CONFIG_VXLAN"
else
  fail "no VXLAN: not refused as expected (exit $(rc novxlan))"; show novxlan
fi
if [ -e "$tmp/novxlan" ]; then fail "no VXLAN: files were installed"; else ok "no VXLAN: nothing installed"; fi
# The same fake kernel lacks bpffs, cgroup v2, BTF and eBPF hooks: warnings, not refusals.
if grep -Eq '^ +warning +bpffs' "$tmp/novxlan.out" && grep -Eq '^ +warning +cgroup-v2' "$tmp/novxlan.out" &&
  grep -Eq '^ +warning +ebpf-hooks +missing: cgroup sock_addr hooks' "$tmp/novxlan.out"; then
  ok "no bpffs, cgroup v2 or eBPF hooks: warned"
else
  fail "no bpffs, cgroup v2 or eBPF hooks: no warnings"; show novxlan
fi

# 3. nft missing, then nft refusing: refused, naming nftables and the fix.
echo CONFIG_VXLAN=m >>"$tmp/config"
run nonft env SHOAL_NFT="$tmp/no-such-nft" "${fake[@]}" bash scripts/install.sh --check-only
if [ "$(rc nonft)" != 0 ] && [ "$(wc -l <"$tmp/nonft.err")" = 1 ] &&
  grep -q 'nft is not installed: apt-get install nftables' "$tmp/nonft.err"; then
  ok "no nft: refused in one line naming the package"
else
  fail "no nft: not refused as expected (exit $(rc nonft))"; show nonft
fi
printf '#!/bin/sh\necho "Error: Could not process rule: Operation not supported" >&2\nexit 1\n' >"$tmp/bad-nft"
chmod +x "$tmp/bad-nft"
run badnft env SHOAL_NFT="$tmp/bad-nft" "${fake[@]}" bash scripts/install.sh --check-only
if [ "$(rc badnft)" != 0 ] && [ "$(wc -l <"$tmp/badnft.err")" = 1 ] && grep -q 'nftables does not work here' "$tmp/badnft.err" &&
  grep -q 'Operation not supported' "$tmp/badnft.err"; then
  ok "nft refusing: refused in one line with nft's error"
else
  fail "nft refusing: not refused as expected (exit $(rc badnft))"; show badnft
fi

# 4. Install stub binaries under a prefix: files and modes, nothing enabled.
root=$tmp/root
run install bash scripts/install.sh --prefix "$root" "$tmp/bin"
if [ "$(rc install)" = 0 ]; then ok "--prefix install exits 0"; else fail "--prefix install exited $(rc install)"; show install; fi
for b in shoal shoald; do
  f=$root/usr/local/bin/$b
  if [ -f "$f" ] && [ "$(mode "$f")" = 755 ] && cmp -s "$f" "$tmp/bin/$b"; then
    ok "$f: the stub, mode 0755"
  else
    fail "$f: missing, wrong content or mode $(mode "$f" 2>/dev/null)"
  fi
done
unit=$root/etc/systemd/system/shoald.service
if [ -f "$unit" ] && [ "$(mode "$unit")" = 644 ] && cmp -s "$unit" packaging/shoald.service; then
  ok "$unit: packaging/shoald.service, mode 0644"
else
  fail "$unit: missing, wrong content or mode $(mode "$unit" 2>/dev/null)"
fi
if grep -q 'nothing enabled or started' "$tmp/install.out"; then ok "--prefix enables nothing"; else fail "--prefix output: no 'nothing enabled'"; show install; fi
extra=$(find "$root" -type f | sort | sed "s|^$root||" | tr '\n' ' ')
if [ "$extra" = "/etc/systemd/system/shoald.service /usr/local/bin/shoal /usr/local/bin/shoald " ]; then
  ok "exactly three files installed, no temporary files left"
else
  fail "installed files: $extra"
fi

# 5. Installing again replaces the binaries (a new version over a running one).
printf '#!/bin/sh\necho stub shoald v2\n' >"$tmp/bin/shoald"
run again bash scripts/install.sh --prefix "$root" "$tmp/bin"
if [ "$(rc again)" = 0 ] && cmp -s "$root/usr/local/bin/shoald" "$tmp/bin/shoald"; then
  ok "a second install replaces shoald"
else
  fail "a second install did not replace shoald (exit $(rc again))"; show again
fi

# 6. A directory without the binaries: refused in one line naming the file.
mkdir -p "$tmp/empty"
run nobin bash scripts/install.sh --prefix "$tmp/nobin" "$tmp/empty"
if [ "$(rc nobin)" != 0 ] && [ "$(wc -l <"$tmp/nobin.err")" = 1 ] && grep -q "no executable $tmp/empty/shoal" "$tmp/nobin.err" &&
  [ ! -e "$tmp/nobin" ]; then
  ok "missing binaries: refused in one line, nothing installed"
else
  fail "missing binaries: not refused as expected (exit $(rc nobin))"; show nobin
fi

echo "install.sh: $passed passed, $failed failed"
[ "$failed" = 0 ]

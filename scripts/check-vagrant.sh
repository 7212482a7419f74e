#!/usr/bin/env bash
# Checks the Vagrantfile without booting anything: installs Debian's vagrant and
# vagrant-libvirt packages when they are missing (as root; no recommends, so no libvirt
# daemon or QEMU), then runs `vagrant validate` with the default counts and with larger
# ones. `vagrant validate` reads the Vagrantfile only: it downloads no box, starts no VM
# and needs no network. With the libvirt plugin it also checks the libvirt provider's
# settings; VirtualBox is not in Debian 12, so its block is not checked here.
set -euo pipefail
cd "$(dirname "$0")/.."

# No update check against HashiCorp's servers.
export VAGRANT_CHECKPOINT_DISABLE=1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
updated=0
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "check-vagrant.sh: $* missing; install it (apt-get install $*) or run as root" >&2
    exit 1
  fi
  until DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1; do
    if [ "$updated" = 1 ]; then
      echo "check-vagrant.sh: apt-get install $* failed: $(grep -E '^E:' "$log" | head -1)" >&2
      exit 1
    fi
    # A fresh machine may have no package lists yet.
    apt-get update -q >"$log" 2>&1 || true
    updated=1
  done
}
debian_pkg() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

if ! command -v vagrant >/dev/null 2>&1; then
  apt_install vagrant
  echo "installed $(vagrant --version)"
fi
# The libvirt plugin lets validate check the provider block; only with Debian's vagrant.
if debian_pkg vagrant && ! debian_pkg vagrant-libvirt; then
  apt_install vagrant-libvirt
  echo "installed vagrant-libvirt"
fi
if vagrant plugin list 2>/dev/null | grep -q '^vagrant-libvirt '; then
  mode=(env VAGRANT_DEFAULT_PROVIDER=libvirt)
  flags=()
  provider="libvirt provider"
else
  mode=(env)
  flags=(--ignore-provider)
  provider="provider settings ignored: no vagrant-libvirt"
fi

validate() {
  local what=$1
  shift
  if out=$("${mode[@]}" "$@" vagrant validate "${flags[@]}" 2>&1); then
    echo "ok: vagrant validate, $what ($provider): $(echo "$out" | tail -1)"
  else
    echo "$out" >&2
    echo "check-vagrant.sh: vagrant validate failed ($what)" >&2
    exit 1
  fi
}

validate "1 manager, 2 workers"
validate "SHOAL_WORKERS=4" SHOAL_WORKERS=4
validate "SHOAL_MANAGERS=3 SHOAL_WORKERS=0" SHOAL_MANAGERS=3 SHOAL_WORKERS=0
# The machines as Vagrant itself loads them: names, addresses (198.18.0.0/15 only, no
# two alike, management networks included), roles, the join target, the box, CPUs and
# memory for both providers.
plan() { # EXPECTED_NAMES CPUS MEMORY, with the settings in the environment
  EXPECT_NAMES=$1 EXPECT_CPUS=$2 EXPECT_MEMORY=$3 ruby - <<'RUBY'
require "vagrant"
require "ipaddr"
def bad(message)
  warn message
  exit 1
end
env = Vagrant::Environment.new(cwd: Dir.pwd)
names = env.machine_names.map(&:to_s)
bad "machines #{names.join(' ')}, expected #{ENV['EXPECT_NAMES']}" if names.join(" ") != ENV["EXPECT_NAMES"]
range = IPAddr.new("198.18.0.0/15")
seen = {}
first = nil
names.each do |name|
  vm = env.vagrantfile.machine_config(name.to_sym, nil, nil, nil, false)[:config].vm
  ips = vm.networks.select { |t, _| t == :private_network }.map { |_, o| o[:ip] }
  bad "#{name}: private networks #{ips.inspect}, expected one" if ips.size != 1
  ip = ips.first
  bad "#{name}: #{ip} is outside 198.18.0.0/15" unless range.include?(IPAddr.new(ip))
  bad "#{name}: #{ip} is also #{seen[ip]}'s" if seen[ip]
  seen[ip] = name
  first ||= ip
  args = vm.provisioners.map { |p| Array(p.config.args) }.find { |a| a.size == 4 } or bad "#{name}: no shoal provisioner"
  role = name == "manager1" ? "init" : name.sub(/\d+\z/, "")
  want = [role, ip, "#{first}:2377", "198.19.0.0/16"]
  bad "#{name}: provisioned with #{args.inspect}, expected #{want.inspect}" if args != want
  bad "#{name}: box #{vm.box}" if vm.box != "debian/bookworm64"
  vb = vm.get_provider_config(:virtualbox).customizations.map { |_, c| c[2..3].join(" ") }.sort
  want_vb = ["--cpus #{ENV['EXPECT_CPUS']}", "--memory #{ENV['EXPECT_MEMORY']}", "--natnet1 198.18.253.0/24"]
  bad "#{name}: virtualbox #{vb.inspect}, expected #{want_vb.inspect}" if vb != want_vb
  lv = vm.get_provider_config(:libvirt)
  if lv.respond_to?(:cpus)
    got = [lv.cpus.to_s, lv.memory.to_s]
    bad "#{name}: libvirt #{got.join(' CPUs, ')} MiB" if got != [ENV["EXPECT_CPUS"], ENV["EXPECT_MEMORY"]]
    mgmt = IPAddr.new(lv.management_network_address)
    bad "#{name}: libvirt management network #{lv.management_network_address}" unless range.include?(mgmt)
  end
  puts "    #{name.ljust(9)} #{ip.ljust(13)} #{args[0].ljust(7)} -> #{args[2]}"
end
RUBY
}
if ruby -e 'require "vagrant"' 2>/dev/null; then
  for c in "manager1 worker1 worker2|2|2048" \
    "manager1 worker1 worker2 worker3 worker4|2|2048|SHOAL_WORKERS=4" \
    "manager1 manager2 manager3 worker1|4|4096|SHOAL_MANAGERS=3 SHOAL_WORKERS=1 SHOAL_CPUS=4 SHOAL_MEMORY=4096"; do
    IFS='|' read -r names cpus mem settings <<<"$c"
    # shellcheck disable=SC2086,SC2163 # settings are NAME=VALUE words on purpose
    if ! out=$(
      [ -z "$settings" ] || export $settings
      plan "$names" "$cpus" "$mem" 2>&1
    ); then
      echo "$out" >&2
      echo "check-vagrant.sh: the machines of ${settings:-the defaults} are wrong" >&2
      exit 1
    fi
    echo "ok: machines of ${settings:-the defaults}:"
    echo "$out"
  done
else
  echo "note: this vagrant's Ruby library is not loadable by ruby; machines not inspected"
fi
# A bad setting is refused when the Vagrantfile loads, naming the variable.
for bad in SHOAL_WORKERS=two SHOAL_MANAGERS=0 SHOAL_SUBNET=10.0.0; do
  if out=$(env "$bad" vagrant validate "${flags[@]}" 2>&1); then
    echo "check-vagrant.sh: $bad was accepted" >&2
    exit 1
  elif ! grep -q "${bad%%=*}=" <<<"$out"; then
    echo "$out" >&2
    echo "check-vagrant.sh: $bad was refused without naming ${bad%%=*}" >&2
    exit 1
  fi
  echo "ok: $bad refused: $(grep "${bad%%=*}=" <<<"$out" | head -1)"
done

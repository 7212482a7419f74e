#!/usr/bin/env bash
# Builds everything and runs every test: unit tests, then multi-process tests on loopback
# and in network namespaces (those need root; under CI=true they fail instead of skipping).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Lints are enforced, not hoped for: formatting and clippy fail the run before any test.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
cargo test --workspace
# Operator tooling: the install script's checks, and the Vagrantfile (validated, not booted).
bash scripts/test-install.sh
bash scripts/check-vagrant.sh

#!/usr/bin/env bash
# Builds everything and runs every test: unit tests, then multi-process tests on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
cargo test --workspace

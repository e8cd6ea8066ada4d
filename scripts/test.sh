#!/usr/bin/env bash
# The single test command: installs the test prerequisites, builds everything
# and runs the whole test suite. Extra arguments go to `cargo test`.
#
# On a fresh clone of an idle 2-core machine it takes about 30 minutes (most
# of it compiling: the workspace in the dev profile, the static container
# image, the WASM filters and the language runtimes' components) and leaves
# about 11 GB in target/; the first run on a machine also builds the tansu
# Kafka broker into ~/.cache/hookline-peers (10 to 20 minutes, once). Every test binary runs even when an earlier one fails
# (--no-fail-fast), so one run reports every failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

started=$SECONDS
step() { printf 'test: [%dm%02ds] %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*"; }

step "scripts/setup-tests.sh"
scripts/setup-tests.sh

# Where the end-to-end tests find the real Pusher-library peers (tests/peers).
export TEST_PEERS_NODE="${TEST_PEERS_NODE:-node}"
export TEST_PEERS_PYTHON="${TEST_PEERS_PYTHON:-$ROOT/tests/peers/.venv/bin/python}"
export TEST_PEERS_DIR="${TEST_PEERS_DIR:-$ROOT/tests/peers}"

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

step "cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast "$@"

step "done"

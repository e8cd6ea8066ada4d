#!/usr/bin/env bash
# The single test command: installs the test prerequisites, builds everything
# and runs the whole test suite. Extra arguments go to `cargo test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

scripts/setup-tests.sh

# Where the end-to-end tests find the real Pusher-library peers (tests/peers).
export TEST_PEERS_NODE="${TEST_PEERS_NODE:-node}"
export TEST_PEERS_PYTHON="${TEST_PEERS_PYTHON:-$ROOT/tests/peers/.venv/bin/python}"
export TEST_PEERS_DIR="${TEST_PEERS_DIR:-$ROOT/tests/peers}"

echo "test: cargo fmt --all -- --check"
cargo fmt --all -- --check

echo "test: cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "test: cargo build --workspace --all-targets"
cargo build --workspace --all-targets

echo "test: cargo test --workspace"
cargo test --workspace "$@"

# ---------------------------------------------------------------------------
# MORE TEST STEPS GO HERE (e.g. building example WASM filters, clippy, docs).
# ---------------------------------------------------------------------------

#!/usr/bin/env bash
# Builds the example filters (examples/filters/*) for wasm32-wasip2 into
# target/wasm/wasm32-wasip2/release/, where examples/apps/filtered.json
# expects them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
exec cargo build --release --target wasm32-wasip2 --target-dir target/wasm \
    -p drop-by-channel -p redact-client-data -p collapse-client-events

#!/usr/bin/env bash
# Builds Hookline (release) and the example WASM filters, and runs the
# daemon on the example apps:
#   scripts/run.sh [more `hookline serve` flags]
# It listens on 127.0.0.1:7077; the examples deliver to 127.0.0.1:7078,
# where `hookline listen` prints what arrives.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
scripts/build-filters.sh
exec cargo run --release --bin hookline -- serve --apps examples/apps "$@"

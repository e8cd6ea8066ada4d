#!/usr/bin/env bash
# Builds Hookline (release) and the example WASM filters, and runs the
# daemon on the example apps:
#   scripts/run.sh [more `hookline serve` flags]
# It listens on 127.0.0.1:7077; the examples deliver to 127.0.0.1:7078,
# where `hookline listen` prints what arrives. The store goes to
# ./hookline-data unless HOOKLINE_DATA_DIR (or --data-dir) says otherwise.
#
# HOOKLINE_BIN=/path/to/hookline runs that binary instead of building one
# (the documentation tests use the suite's own build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
scripts/build-filters.sh
if [ -n "${HOOKLINE_BIN:-}" ]; then
    bin="$HOOKLINE_BIN"
    unset HOOKLINE_BIN # not a daemon setting
    exec "$bin" serve --apps examples/apps "$@"
fi
exec cargo run --release --bin hookline -- serve --apps examples/apps "$@"

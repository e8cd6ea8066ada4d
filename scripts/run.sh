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
say() { printf 'run: %s\n' "$*" >&2; }
if [ -z "${HOOKLINE_BIN:-}" ] && [ ! -x target/release/hookline ]; then
    say "first build: Hookline (release) and the example filters; about 12 minutes on 2 cores"
fi
say "building the example WASM filters (scripts/build-filters.sh)"
scripts/build-filters.sh
if [ -n "${HOOKLINE_BIN:-}" ]; then
    bin="$HOOKLINE_BIN"
    unset HOOKLINE_BIN # not a daemon setting
    exec "$bin" serve --apps examples/apps "$@"
fi
say "building Hookline (release) and starting it on examples/apps"
exec cargo run --release --bin hookline -- serve --apps examples/apps "$@"

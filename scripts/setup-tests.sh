#!/usr/bin/env bash
# Installs everything Hookline's tests need beyond the Rust toolchain itself:
#   * the wasm32-wasip2 Rust target (WASM filters),
#   * the Node test peers (npm `pusher`, from tests/peers/package-lock.json),
#   * a Python venv at tests/peers/.venv with PyPI `pusher`, and moto[server] with boto3
#     (a local SQS/SNS/EventBridge for the AWS sinks' tests) (tests/peers/requirements.txt),
#   * the Python filter SDK (sdk/python, with componentize-py) in that venv,
#   * tansu, a Kafka-protocol broker built with cargo into a per-machine
#     cache (the kafka sink's tests), linked into that venv,
#   * the JavaScript filters' packages (the @hookline/filter SDK from
#     sdk/js, with componentize-qjs), for the tests that build them,
#   * the JavaScript sinks' packages (the @hookline/sink SDK from
#     sdk/js-sink, with componentize-js and rolldown),
#   * redis-server and redis-cli from Debian (tests start their own server;
#     the packaged service is neither needed nor started), and faketime
#     (libfaketime: the cluster's clock-skew test),
#   * nats-server from Debian (the nats sink's tests start their own, with
#     JetStream), and openssl (their TLS test's throwaway certificates),
#   * Debian chromium, which npm playwright-core (a test peer) drives for the
#     status page's browser test,
#   * podman, buildah, runc, uidmap, musl-tools and ca-certificates from
#     Debian, for the container image (scripts/image.sh).
# Idempotent: steps whose result is already up to date are skipped.
# Runnable from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
PEERS="$ROOT/tests/peers"
VENV="$PEERS/.venv"

say() { printf 'setup-tests: %s\n' "$*"; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

# Runs a command as root (directly, or through sudo when there is one).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root to run: $*" >&2
        return 1
    fi
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- 1. Rust target for WASM filters -----------------------------------------
if ! command -v rustup >/dev/null 2>&1; then
    say "rustup not found (needed for the wasm32-wasip2 target)" >&2
    exit 1
fi
if rustup target list --installed 2>/dev/null | grep -qx 'wasm32-wasip2'; then
    say "rust target wasm32-wasip2: present"
else
    say "rust target wasm32-wasip2: installing"
    rustup target add wasm32-wasip2
fi

for component in clippy rustfmt; do
    if rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        say "rust component $component: present"
    else
        say "rust component $component: installing"
        rustup component add "$component"
    fi
done

# --- 2. Redis (the shared store's tests) --------------------------------------
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    say "redis-server: present ($(redis-server --version | cut -d' ' -f3))"
else
    say "redis-server: installing"
    # No service start inside containers without an init system.
    apt_install redis-server
fi

# --- 2b. libfaketime (the cluster's clock-skew test runs nodes 5 s off) -------
if [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ]; then
    say "faketime: present"
else
    say "faketime: installing"
    apt_install faketime
fi

# --- 2c. NATS (the nats sink's tests) -----------------------------------------
# Debian's nats-server; tests start their own server (with JetStream, a store
# directory and a free port each), so the packaged service is not needed.
if command -v nats-server >/dev/null 2>&1; then
    say "nats-server: present ($(nats-server --version 2>&1 | head -n1))"
else
    say "nats-server: installing"
    apt_install nats-server
fi
# The nats TLS test makes its throwaway certificates with the openssl command.
if command -v openssl >/dev/null 2>&1; then
    say "openssl: present"
else
    say "openssl: installing"
    apt_install openssl
fi

# --- 2a. Chromium (the status page's browser test) ---------------------------
# Debian's build, driven by npm playwright-core (tests/peers), which never
# downloads a browser of its own.
if dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q 'ok installed'; then
    say "chromium: present"
else
    say "chromium: installing"
    apt_install chromium
fi

# --- 2b. Node peers (npm pusher, playwright-core) ------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "node and npm are needed for the test peers" >&2
    exit 1
fi
NPM_STAMP="$PEERS/node_modules/.hookline-setup-stamp"
if [ -f "$PEERS/package-lock.json" ]; then
    want="$(sha "$PEERS/package-lock.json") $(node --version)"
    if [ -f "$NPM_STAMP" ] && [ "$(cat "$NPM_STAMP")" = "$want" ] \
        && [ -f "$PEERS/node_modules/pusher/package.json" ]; then
        say "node peers: up to date"
    else
        say "node peers: npm ci"
        (cd "$PEERS" && npm ci --no-audit --no-fund --loglevel=error)
        printf '%s\n' "$want" > "$NPM_STAMP"
    fi
else
    say "node peers: no package-lock.json, npm install"
    (cd "$PEERS" && npm install --no-audit --no-fund --loglevel=error)
fi

# --- 3. Python peer (PyPI pusher) in a venv -----------------------------------
if ! command -v python3 >/dev/null 2>&1; then
    say "python3 not found" >&2
    exit 1
fi
# A venv whose interpreter no longer runs (e.g. python3 was replaced) is rebuilt.
if [ -d "$VENV" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    say "python venv: broken, recreating"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    say "python venv: creating $VENV"
    if ! python3 -m venv "$VENV"; then
        # e.g. Debian wants the versioned python3.X-venv package.
        rm -rf "$VENV"
        pyver="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        apt_install python3-venv "python${pyver}-venv"
        python3 -m venv "$VENV"
    fi
fi
PIP_STAMP="$VENV/.hookline-setup-stamp"
want="$(sha "$PEERS/requirements.txt")"
if [ -f "$PIP_STAMP" ] && [ "$(cat "$PIP_STAMP")" = "$want" ] \
    && "$VENV/bin/python" -c 'import pusher' >/dev/null 2>&1; then
    say "python peer: up to date"
else
    say "python peer: pip install -r tests/peers/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$PEERS/requirements.txt"
    printf '%s\n' "$want" > "$PIP_STAMP"
fi

# --- 3a. tansu, a Kafka-protocol broker (the kafka sink's tests) --------------
# Built from crates.io once per machine into a cache outside the clone (CI's
# fresh clones reuse it), and linked into the venv, where tests/kafka.rs
# looks for it. --locked builds the dependency set tansu was published with
# (checked to build and pass tests/kafka.rs). Building takes 8 minutes on 2
# idle cores, about 20 beside other builds.
TANSU_VERSION=0.6.0
TANSU_ROOT="${HOOKLINE_PEER_CACHE:-$HOME/.cache/hookline-peers}/tansu-$TANSU_VERSION"
if [ -x "$TANSU_ROOT/bin/tansu" ]; then
    say "tansu $TANSU_VERSION: present ($TANSU_ROOT)"
else
    say "tansu $TANSU_VERSION: cargo install into $TANSU_ROOT (about 8 minutes)"
    cargo install tansu --version "=$TANSU_VERSION" --features dynostore --locked --root "$TANSU_ROOT"
fi
ln -sfn "$TANSU_ROOT/bin/tansu" "$VENV/bin/tansu"
# openssl makes a test CA and socat fronts the broker with TLS (tansu 0.6.0
# cannot serve TLS itself), for the kafka sink's TLS test, and a receiver
# that requires a client certificate for the http sink's mTLS test;
# tinyproxy is the real proxy the http sink's `proxy` test goes through.
for tool in openssl socat tinyproxy; do
    if command -v "$tool" >/dev/null 2>&1; then
        say "$tool: present"
    else
        say "$tool: installing"
        apt_install "$tool"
    fi
done

# The Python filter SDK (with componentize-py) in the same venv.
SDK_STAMP="$VENV/.hookline-sdk-python-stamp"
want="$(cat "$ROOT"/sdk/python/pyproject.toml "$ROOT"/sdk/python/hookline_filter/*.py \
    "$ROOT"/sdk/python/hookline_filter/wit/filter.wit | sha256sum | cut -d' ' -f1)"
if [ -f "$SDK_STAMP" ] && [ "$(cat "$SDK_STAMP")" = "$want" ] && [ -x "$VENV/bin/hookline-filter-py" ]; then
    say "python filter sdk: up to date"
else
    say "python filter sdk: pip install sdk/python (componentize-py)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$ROOT/sdk/python"
    printf '%s\n' "$want" > "$SDK_STAMP"
fi

# --- 4. JavaScript filters (the SDK and componentize-qjs) ---------------------
# Installed as copies (--install-links), so the build resolves the SDK inside
# the project; re-installed when a lockfile or the SDK changes.
for project in examples/filters/drop-by-channel-js tests/filters/hostile-js; do
    dir="$ROOT/$project"
    stamp="$dir/node_modules/.hookline-setup-stamp"
    want="$(cat "$dir/package-lock.json" "$ROOT"/sdk/js/package.json "$ROOT"/sdk/js/index.js \
        "$ROOT"/sdk/js/bin/*.mjs "$ROOT"/sdk/js/wit/filter.wit | sha256sum | cut -d' ' -f1) $(node --version)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "$project: up to date"
    else
        say "$project: npm ci"
        (cd "$dir" && npm ci --install-links --no-audit --no-fund --loglevel=error)
        printf '%s\n' "$want" > "$stamp"
    fi
done

# JavaScript sink components: the @hookline/sink SDK from sdk/js-sink, with
# componentize-js 0.23.0, @bytecodealliance/preview2-shim 0.25.0 and
# rolldown 1.3.3 (pinned in the SDK's package.json and the lockfile).
for project in tests/sinks/js; do
    dir="$ROOT/$project"
    stamp="$dir/node_modules/.hookline-setup-stamp"
    want="$(cat "$dir/package-lock.json" "$ROOT"/sdk/js-sink/package.json "$ROOT"/sdk/js-sink/*.js \
        "$ROOT"/sdk/js-sink/bin/*.mjs "$ROOT"/sdk/js-sink/wit/*.wit "$ROOT"/sdk/js-sink/wit/deps/*.wit \
        | sha256sum | cut -d' ' -f1) $(node --version)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "$project: up to date"
    else
        say "$project: npm ci"
        (cd "$dir" && npm ci --install-links --no-audit --no-fund --loglevel=error)
        printf '%s\n' "$want" > "$stamp"
    fi
done

# --- 5. Container image (scripts/image.sh and its test) -----------------------
# podman builds the image FROM scratch (buildah underneath) and runs it with
# runc; uidmap gives it user namespaces; musl-tools (musl-gcc) builds the
# static daemon's C parts (ring, mimalloc); the image carries the host's CA
# certificates. scripts/image.sh adds the musl Rust target itself.
missing=()
for package in podman buildah runc uidmap musl-tools ca-certificates; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "podman, buildah, runc, uidmap, musl-tools, ca-certificates: present"
else
    say "container tools: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

say "done"

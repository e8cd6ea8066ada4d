#!/usr/bin/env bash
# Builds Hookline's container image FROM scratch and writes it as an OCI
# archive:
#   scripts/image.sh [--profile PROFILE] [--tag NAME:TAG] [--out FILE]
#
# It builds the daemon statically for x86_64-unknown-linux-musl (the WASM
# compiler included), puts it beside the build host's CA certificates and a
# passwd entry for a non-root user (hookline, 65532), and runs `podman build`
# on packaging/container/Containerfile. Nothing is pulled: there is no base
# image, and the build runs no command inside a container. Offline, it works
# once cargo has the crates (CARGO_NET_OFFLINE=true to be sure).
#
#   --profile  the Cargo profile (default release)
#   --tag      default localhost/hookline:VERSION (and :latest) for release,
#              localhost/hookline:PROFILE for another profile
#   --out      default target/image/hookline.oci.tar (hookline-PROFILE.oci.tar)
#
# Nothing changed since the last run, nothing is rebuilt: cargo checks the
# binary, and the image is kept while its build context's digest is the same.
# CARGO_TARGET_DIR is honoured (default target/).
#
# Needs rustup (the musl target is added if missing), musl-gcc (Debian
# musl-tools), podman, and /etc/ssl/certs/ca-certificates.crt
# (ca-certificates); scripts/setup-tests.sh installs them.
#
# Running it: on a machine like this project's CI machines (root in a
# container without systemd, on cgroup v1, where podman may not raise
# resource limits), podman needs the runc runtime and limits within the
# host's; elsewhere the flags are harmless:
#   podman run --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
#       -p 7077:7077 -v "$PWD/apps:/etc/hookline/apps:ro" -v hookline-data:/var/lib/hookline \
#       localhost/hookline:latest
# or load the archive elsewhere: podman load -i target/image/hookline.oci.tar
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
CALLER_DIR="$PWD"
cd "$ROOT"

say() { printf 'image: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

PROFILE=release
TAG=""
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE="${2:?--profile needs a Cargo profile name}"; shift 2 ;;
        --profile=*) PROFILE="${1#*=}"; shift ;;
        --tag) TAG="${2:?--tag needs NAME:TAG}"; shift 2 ;;
        --tag=*) TAG="${1#*=}"; shift ;;
        --out) OUT="${2:?--out needs a file}"; shift 2 ;;
        --out=*) OUT="${1#*=}"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see scripts/image.sh --help)" ;;
    esac
done

TARGET=x86_64-unknown-linux-musl
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
if [ -z "$TAG" ]; then
    if [ "$PROFILE" = release ]; then TAG="localhost/hookline:$VERSION"; else TAG="localhost/hookline:$PROFILE"; fi
fi
if [ -z "$OUT" ]; then
    if [ "$PROFILE" = release ]; then OUT="$TARGET_DIR/image/hookline.oci.tar"; else OUT="$TARGET_DIR/image/hookline-$PROFILE.oci.tar"; fi
fi
case "$OUT" in /*) ;; *) OUT="$CALLER_DIR/$OUT" ;; esac
CA=/etc/ssl/certs/ca-certificates.crt

command -v podman >/dev/null 2>&1 || die "podman not found: apt-get install podman (or run scripts/setup-tests.sh)"
command -v musl-gcc >/dev/null 2>&1 || die "musl-gcc not found: apt-get install musl-tools (or run scripts/setup-tests.sh)"
[ -f "$CA" ] || die "$CA not found: apt-get install ca-certificates"
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    say "rust target $TARGET: installing"
    rustup target add "$TARGET"
fi

# Run from a test, cargo's variables for that test are in the environment;
# build scripts that watch them (ring's does) would rebuild everything after
# them whenever the script is run from a shell instead.
for name in $(compgen -e); do
    case "$name" in
        CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_CRATE_NAME | CARGO_BIN_* | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | OUT_DIR)
            unset "$name" ;;
    esac
done

# The static build. ring and mimalloc compile C through the cc crate, which
# looks for x86_64-linux-musl-gcc unless told; Debian calls it musl-gcc.
# Rust's musl target links statically by default (crt-static).
say "cargo build --profile $PROFILE --target $TARGET"
start=$SECONDS
CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_DIR="$TARGET_DIR" \
    cargo build --locked --profile "$PROFILE" --target "$TARGET" -p hookline --bin hookline
say "cargo build took $((SECONDS - start)) s"
case "$PROFILE" in
    dev) BIN="$TARGET_DIR/$TARGET/debug/hookline" ;;
    *) BIN="$TARGET_DIR/$TARGET/$PROFILE/hookline" ;;
esac
[ -x "$BIN" ] || die "cargo built no $BIN"
if command -v readelf >/dev/null 2>&1 && readelf -lW "$BIN" | grep -q 'program interpreter'; then
    die "$BIN is dynamically linked; a FROM scratch image needs a static build"
fi

# The build context: rootfs/ is copied to /, data/hookline becomes
# /var/lib/hookline.
CONTEXT="$TARGET_DIR/image/context-$PROFILE"
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/rootfs/etc/ssl/certs" "$CONTEXT/rootfs/etc/hookline/apps" "$CONTEXT/rootfs/tmp" \
    "$CONTEXT/rootfs/var/lib" "$CONTEXT/data/hookline"
cp "$BIN" "$CONTEXT/rootfs/hookline"
if command -v strip >/dev/null 2>&1; then
    # The symbol table is a large part of the binary; a panic still names
    # its file and line without it.
    strip "$CONTEXT/rootfs/hookline"
fi
cp "$CA" "$CONTEXT/rootfs/etc/ssl/certs/ca-certificates.crt"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'hookline:x:65532:65532:hookline:/var/lib/hookline:/sbin/nologin' > "$CONTEXT/rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'hookline:x:65532:' > "$CONTEXT/rootfs/etc/group"
chmod 0755 "$CONTEXT/rootfs/hookline"
chmod 0644 "$CONTEXT/rootfs/etc/passwd" "$CONTEXT/rootfs/etc/group" "$CONTEXT/rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$CONTEXT/rootfs/tmp"
chmod 0700 "$CONTEXT/data/hookline"

# The image is current when it was built from the same context under the
# same tag (the context holds the binary, so any code change rebuilds it).
digest="$( (cd "$CONTEXT" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    find . -printf '%p %m\n' | LC_ALL=C sort
    cat "$ROOT/packaging/container/Containerfile"
    echo "$TAG $VERSION") | sha256sum | cut -d' ' -f1)"
STAMP="$OUT.stamp"
if [ -f "$OUT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ] && podman image exists "$TAG"; then
    say "$TAG is up to date ($OUT)"
    echo "$TAG"
    exit 0
fi

tags=(--tag "$TAG")
if [ "$PROFILE" = release ] && [ "${TAG%:*}" = localhost/hookline ]; then
    tags+=(--tag localhost/hookline:latest)
fi
# The last commit's time as the image's: the same sources give the same image.
created="$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)"
previous="$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
say "podman build $TAG"
# --layers=false: no intermediate image per instruction is kept (there is
# nothing worth caching: no RUN).
podman build --quiet --pull=never --layers=false --timestamp "$created" "${tags[@]}" \
    --label "org.opencontainers.image.title=hookline" \
    --label "org.opencontainers.image.version=$VERSION" \
    -f "$ROOT/packaging/container/Containerfile" "$CONTEXT" >/dev/null
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$TAG")" ]; then
    # The image this tag named before, unless a container still uses it.
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT" "$STAMP"
podman save --quiet --format oci-archive -o "$OUT" "$TAG"
printf '%s\n' "$digest" > "$STAMP"
say "wrote $OUT ($(du -h "$OUT" | cut -f1)); image $TAG, $(podman image inspect --format '{{.Size}}' "$TAG") bytes"
echo "$TAG"

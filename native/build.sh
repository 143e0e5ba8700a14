#!/bin/sh
# Installs rpeer's two native files as priv/rpeer_nif.so (the NIF) and priv/rpeer-wait
# (which runs every spawned peer). Run by rebar3's compile pre-hook from the application
# directory.
#
#   native/build.sh                 builds them with cargo: Rust of the workspace's
#                                   rust-version (Cargo.toml) or newer
#   native/build.sh --check-toolchain
#                                   only checks that cargo and rustc are new enough
#
# Exits non-zero with one message saying what is missing when it cannot install them.
set -eu
cd "$(dirname "$0")/.."
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
rust_version=$(sed -n 's/^rust-version = "\([0-9.]*\)"$/\1/p' Cargo.toml)

die() {
    printf 'native/build.sh: %s\n' "$*" >&2
    exit 1
}

# Succeeds when version $1 (X.Y.Z, a suffix such as -nightly ignored) is at least $2.
at_least() {
    awk -v have="$1" -v need="$2" 'BEGIN {
        split(have, h, /[.-]/); split(need, n, /[.-]/)
        for (i = 1; i <= 3; i++) if (h[i] + 0 != n[i] + 0) exit h[i] + 0 < n[i] + 0
    }'
}

# Says what is wrong with the Rust toolchain ($1), what rpeer needs and how to get it.
no_toolchain() {
    cat >&2 <<EOF
native/build.sh: $1: rpeer builds its NIF with Rust $rust_version or newer (cargo and rustc).
  Install it with rustup:  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  (where rustup is installed already: rustup update stable). Debian 12's own rustc 1.63
  and cargo are too old.
EOF
    exit 1
}

# Fails with no_toolchain unless cargo and the rustc it runs are at least rust_version.
check_toolchain() {
    for tool in cargo "${RUSTC:-rustc}"; do
        command -v "$tool" >/dev/null 2>&1 \
            || no_toolchain "$tool was not found (in PATH or ${CARGO_HOME:-$HOME/.cargo}/bin)"
        # rustup's proxies fail here when no toolchain is chosen: say their first line.
        version=$("$tool" --version 2>&1) \
            || no_toolchain "'$tool --version' failed ($(echo "$version" | head -n 1))"
        version=$(echo "$version" | sed -n '1s/^[^ ]* \([0-9][0-9.]*[^ ]*\).*/\1/p')
        at_least "$version" "$rust_version" || no_toolchain "$tool $version is too old"
    done
}

build() {
    check_toolchain
    cargo build --release --quiet -p rpeer_nif
    # rpeer-wait is exec'ed once per peer: linked statically it starts ~0.3 ms sooner (no
    # dynamic loader, libc or libgcc_s to map). Where static glibc is missing, dynamically.
    wait_bin() { cargo rustc --release --quiet -p rpeer_core --bin rpeer-wait "$@"; }
    wait_bin -- -C target-feature=+crt-static 2>/dev/null || wait_bin
    mkdir -p priv
    for built in librpeer_nif.so:rpeer_nif.so rpeer-wait:rpeer-wait; do
        cp -f "${CARGO_TARGET_DIR:-target}/release/${built%%:*}" "priv/${built#*:}.tmp"
        mv -f "priv/${built#*:}.tmp" "priv/${built#*:}"
    done
}

case "${1:-}" in
    --check-toolchain)
        check_toolchain
        ;;
    "")
        build
        ;;
    *)
        die "usage: native/build.sh [--check-toolchain]"
        ;;
esac

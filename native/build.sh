#!/bin/sh
# Builds the rpeer NIF and rpeer-wait (which runs every spawned peer) with cargo and
# installs them as priv/rpeer_nif.so and priv/rpeer-wait.
# Run by rebar3's compile pre-hook from the application directory.
set -eu
cd "$(dirname "$0")/.."
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
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

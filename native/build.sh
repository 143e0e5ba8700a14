#!/bin/sh
# Builds the rpeer NIF with cargo and installs it as priv/rpeer_nif.so.
# Run by rebar3's compile pre-hook from the application directory.
set -eu
cd "$(dirname "$0")/.."
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
cargo build --release --quiet -p rpeer_nif
mkdir -p priv
cp -f target/release/librpeer_nif.so priv/rpeer_nif.so.tmp
mv -f priv/rpeer_nif.so.tmp priv/rpeer_nif.so

#!/bin/sh
# Installs rpeer's two native files as priv/rpeer_nif.so (the NIF) and priv/rpeer-wait
# (which runs every spawned peer). Run by rebar3's compile pre-hook from the application
# directory.
#
#   native/build.sh                 builds them with cargo: Rust of the workspace's
#                                   rust-version (Cargo.toml) or newer
#   RPEER_PREBUILT=DIR native/build.sh
#                                   copies them from DIR instead, with no Rust toolchain,
#                                   once they are shown to fit: the NIF loads in this
#                                   Erlang and rpeer-wait runs
#   native/build.sh --export DIR    builds them, then copies them into DIR (for
#                                   RPEER_PREBUILT on machines like this one)
#   native/build.sh --check-toolchain
#                                   only checks that cargo and rustc are new enough
#
# Exits non-zero with one message saying what is missing when it cannot install them.
set -eu
invoked_from=$PWD
cd "$(dirname "$0")/.."
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
rust_version=$(sed -n 's/^rust-version = "\([0-9.]*\)"$/\1/p' Cargo.toml)
stage=""
trap '[ -z "$stage" ] || rm -rf "$stage"' EXIT

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
  and cargo are too old. Or, with no Rust here: run native/build.sh --export DIR where
  Rust is, and set RPEER_PREBUILT=DIR here (see the README).
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
    install_files "${CARGO_TARGET_DIR:-target}/release" librpeer_nif.so
}

# Copies rpeer_nif.so (named $2 in $1) and rpeer-wait from directory $1 into priv/, each
# through a temporary name so that priv/ never holds half a file.
install_files() {
    mkdir -p priv
    for built in "$2:rpeer_nif.so" rpeer-wait:rpeer-wait; do
        cp -f "$1/${built%%:*}" "priv/${built#*:}.tmp"
        mv -f "priv/${built#*:}.tmp" "priv/${built#*:}"
    done
}

# Installs the files of RPEER_PREBUILT ($1) once a copy of them is shown to fit here:
# rpeer-wait runs a program and reports its status, and the Erlang that rebar3 runs ($ERL)
# loads the NIF through rpeer_nif's own load/0 (the NIF's functions must be the module's).
prebuilt() {
    dir=$1
    # The hook runs in rpeer's own directory, wherever rpeer sits in a project's build.
    case "$dir" in /*) ;; *) die "RPEER_PREBUILT=$dir: give an absolute path" ;; esac
    [ -d "$dir" ] || die "RPEER_PREBUILT=$dir is not a directory"
    for file in rpeer_nif.so rpeer-wait; do
        [ -f "$dir/$file" ] \
            || die "RPEER_PREBUILT=$dir has no $file (native/build.sh --export DIR makes both files)"
    done
    stage=$(mktemp -d)
    mkdir "$stage/priv" "$stage/ebin"
    cp "$dir/rpeer_nif.so" "$dir/rpeer-wait" "$stage/priv/"
    chmod +x "$stage/priv/rpeer-wait"
    # rpeer-wait takes its parent's pid first: the shell's, which does not exec it.
    waited=$(sh -c '"$0" $$ true 3>&1; :' "$stage/priv/rpeer-wait" 2>&1) || true
    [ "$waited" = 0 ] || die "RPEER_PREBUILT=$dir: its rpeer-wait does not run here: $waited"
    # load/0 is called directly, not on load, so that load_nif/2's own reason comes back.
    # A damaged file can kill the VM (SIGBUS when the ELF file is cut short): the shell
    # that waits for it says so, into $loaded.
    loaded=$(exec 2>&1; "${ERL:-erl}" -noshell -eval '
        [Source, Beam] = init:get_plain_arguments(),
        try
            {ok, Forms} = epp:parse_file(Source, []),
            Unloaded = [case Form of
                            {attribute, Anno, on_load, _} -> {attribute, Anno, export, [{load, 0}]};
                            _ -> Form
                        end || Form <- Forms],
            {ok, rpeer_nif, Binary} = compile:forms(Unloaded, [binary, return_errors]),
            {module, rpeer_nif} = code:load_binary(rpeer_nif, Beam, Binary),
            case rpeer_nif:load() of
                ok -> io:put_chars("ok"), halt(0);
                {error, {_, Why}} when is_list(Why) -> io:put_chars(Why), halt(1);
                Other -> io:format("~p", [Other]), halt(1)
            end
        catch Class:Reason -> io:format("~p:~p", [Class, Reason]), halt(1)
        end.' -extra "$PWD/erlang/rpeer_nif.erl" "$stage/ebin/rpeer_nif.beam" \
        || { [ $? -le 128 ] || echo "(the Erlang VM crashed loading it)"; })
    [ "$loaded" = ok ] || die "RPEER_PREBUILT=$dir: its rpeer_nif.so does not load here:" \
        "$(printf '%s' "$loaded" | tr '\n' ' ')"
    install_files "$stage/priv" rpeer_nif.so
}

case "${1:-}" in
    --check-toolchain)
        check_toolchain
        ;;
    --export)
        [ $# -eq 2 ] || die "usage: native/build.sh --export DIR"
        case "$2" in /*) export_dir=$2 ;; *) export_dir=$invoked_from/$2 ;; esac
        build
        mkdir -p "$export_dir"
        cp -f priv/rpeer_nif.so priv/rpeer-wait "$export_dir/"
        echo "native/build.sh: rpeer_nif.so and rpeer-wait are in $export_dir:" \
            "set RPEER_PREBUILT=$export_dir to use them"
        ;;
    "")
        if [ -n "${RPEER_PREBUILT:-}" ]; then
            prebuilt "$RPEER_PREBUILT"
        else
            build
        fi
        ;;
    *)
        die "usage: native/build.sh [--check-toolchain | --export DIR]"
        ;;
esac

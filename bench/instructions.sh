#!/usr/bin/env bash
# User-space instructions per echo round trip, counted exactly by callgrind: our echo example
# on each backend and the tokio peer, the same way — callgrind's whole-process total divided by
# the round trips the C client (bench/echo-client.c) completed. Server on CPU 0, client on CPU 1.
#
#   bench/instructions.sh [ROUNDTRIPS] [CONNECTIONS] [MESSAGE_BYTES]    (default 100000 64 64)
#   ONELOOP_BACKENDS="epoll uring" bench/instructions.sh                 (a subset of backends)
#
# Prints one line per server; SKIP with the reason for one that cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."
roundtrips=${1:-100000}
conns=${2:-64}
size=${3:-64}
backends=${ONELOOP_BACKENDS:-uring aio epoll}

if ! command -v valgrind >/dev/null; then
    echo "SKIP: valgrind is not installed (Debian: apt-get install valgrind)"
    exit 0
fi
cpus=$(nproc)
pin_server=() pin_client=()
if command -v taskset >/dev/null && [ "$cpus" -ge 2 ]; then
    pin_server=(taskset -c 0)
    pin_client=(taskset -c 1)
fi

target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
cc -O2 -o "$target/echo-client" bench/echo-client.c
# The echo example as a user's binary would be built: in its own workspace, so the test-only
# fault-injection hooks that the root workspace's dev-dependencies enable are not compiled in.
cargo build --quiet --release --manifest-path bench/oneloop-echo/Cargo.toml
echo_server=bench/oneloop-echo/target/release/oneloop-echo
tokio_peer=""
if cargo build --quiet --release --manifest-path bench/tokio-peer/Cargo.toml 2>/dev/null; then
    tokio_peer=bench/tokio-peer/target/release/tokio-peer
fi

work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT

# Waits for the server's address line in $1, prints the address.
address_in() {
    for _ in $(seq 600); do
        addr=$(grep -oE '(listening on|LISTEN) [0-9.]+:[0-9]+' "$1" 2>/dev/null | awk '{print $NF}' | head -1 || true)
        if [ -n "$addr" ]; then
            echo "$addr"
            return 0
        fi
        sleep 0.1
    done
    echo "no address from the server: $(cat "$1")" >&2
    return 1
}

# Reads the whole-process total from a callgrind output file.
total_of() {
    awk '/^(summary|totals):/ {print $2; exit}' "$1"
}

report() { # name total
    awk -v n="$1" -v t="$2" -v r="$roundtrips" -v c="$conns" -v s="$size" \
        'BEGIN { printf "%-14s %8.0f instructions per round trip  (%d round trips, %d connections, %d-byte messages, total %d)\n", n, t / r, r, c, s, t }'
}

for backend in $backends; do
    out="$work/$backend"
    ONELOOP_BACKEND=$backend "${pin_server[@]}" valgrind --tool=callgrind \
        --callgrind-out-file="$out.cg" "$echo_server" 127.0.0.1:0 "$conns" \
        >"$out.log" 2>&1 &
    server=$!
    if ! addr=$(address_in "$out.log"); then
        if grep -q "cannot run a ring\|no usable backend\|Unsupported" "$out.log"; then
            echo "$backend: SKIP ($(grep -m1 -i 'error\|cannot' "$out.log"))"
            continue
        fi
        exit 1
    fi
    "${pin_client[@]}" "$target/echo-client" "$addr" "$conns" "$roundtrips" "$size" >/dev/null
    if ! wait "$server"; then
        echo "$backend: the server failed:" >&2
        cat "$out.log" >&2
        exit 1
    fi
    report "oneloop $backend" "$(total_of "$out.cg")"
done

if [ -z "$tokio_peer" ]; then
    echo "tokio: SKIP (bench/tokio-peer did not build: cargo build --release --manifest-path bench/tokio-peer/Cargo.toml)"
    exit 0
fi
out="$work/tokio"
mkfifo "$out.stdin"
"${pin_server[@]}" valgrind --tool=callgrind --callgrind-out-file="$out.cg" \
    "$tokio_peer" echo <"$out.stdin" >"$out.log" 2>&1 &
server=$!
exec 3>"$out.stdin"
addr=$(address_in "$out.log")
"${pin_client[@]}" "$target/echo-client" "$addr" "$conns" "$roundtrips" "$size" >/dev/null
exec 3>&-
wait "$server"
report "tokio" "$(total_of "$out.cg")"

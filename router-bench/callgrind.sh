#!/usr/bin/env bash
# Instructions per unary call in one process of the routed path, counted by
# callgrind (exact where timings on a shared machine are not).
#
#   router-bench/callgrind.sh router|instance|direct [N1 N2]
#
# Runs the example `router` + `instance` (or the `direct` server) from
# target/release, the named one under `valgrind --tool=callgrind`, loads it
# with `h2load -c16 -m4` (SayHello, 100-byte payload) for N1 and then N2 calls,
# and prints (I(N2) - I(N1)) / (N2 - N1): start-up is not counted.
# Needs valgrind and h2load (apt-get install -y valgrind nghttp2-client) and
# `cargo build --release -p myservice --bins`. Extra instance flags
# go in INSTANCE_ARGS (for example --spawn-every-call).
set -euo pipefail
which=${1:?router, instance or direct}
n1=${2:-1000}
n2=${3:-5000}
bin=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work/body.bin" <<'PY'
import struct, sys
msg = b'\x0a\x05bench' + b'\x12' + bytes([100]) + b'\x5a' * 100
open(sys.argv[1], 'wb').write(b'\x00' + struct.pack('>I', len(msg)) + msg)
PY

wait_for() { # file pattern
    for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1" >&2; exit 1
}

# Instructions the measured process ran for $1 calls.
run() {
    local calls=$1 vg="valgrind --tool=callgrind --callgrind-out-file=$work/cg.out"
    local router_cmd="$bin/router" instance_cmd="$bin/instance" addr pid other=""
    rm -f "$work"/*.out
    if [ "$which" = direct ]; then
        RUST_LOG=warn $vg "$bin/direct" --listen 127.0.0.1:0 --id direct >"$work/server.log" 2>&1 &
        pid=$!
        wait_for "$work/server.log" "listening on"
        addr=$(grep -o "listening on [0-9.:]*" "$work/server.log" | head -1 | awk '{print $3}')
    else
        [ "$which" = router ] && router_cmd="$vg $bin/router"
        [ "$which" = instance ] && instance_cmd="$vg $bin/instance"
        RUST_LOG=warn $router_cmd --listen 127.0.0.1:0 >"$work/server.log" 2>&1 &
        local router_pid=$!
        wait_for "$work/server.log" "listening on"
        addr=$(grep -o "listening on [0-9.:]*" "$work/server.log" | head -1 | awk '{print $3}')
        # shellcheck disable=SC2086
        RUST_LOG=warn $instance_cmd --router "http://$addr" --id callgrind ${INSTANCE_ARGS:-} >"$work/instance.log" 2>&1 &
        local instance_pid=$!
        wait_for "$work/instance.log" "registered as"
        if [ "$which" = router ]; then pid=$router_pid; other=$instance_pid; else pid=$instance_pid; other=$router_pid; fi
    fi
    h2load -n"$calls" -c16 -m4 -t1 -d "$work/body.bin" -H 'content-type: application/grpc' \
        -H 'te: trailers' "http://$addr/myservice.v1.Greeter/SayHello" >"$work/h2load.log" 2>&1
    grep -q "$calls succeeded" "$work/h2load.log" || { cat "$work/h2load.log" >&2; exit 1; }
    # The instance first (it leaves its router), then the measured process,
    # which writes its counts on SIGINT.
    if [ -n "$other" ] && [ "$which" = router ]; then kill "$other"; wait "$other" || true; fi
    kill -INT "$pid"; wait "$pid" || true
    if [ -n "$other" ]; then kill "$other" 2>/dev/null || true; wait "$other" 2>/dev/null || true; fi
    grep -h "^summary" "$work/cg.out" | awk '{print $2}'
}

a=$(run "$n1")
b=$(run "$n2")
echo "$which: $(( (b - a) / (n2 - n1) )) instructions per call"

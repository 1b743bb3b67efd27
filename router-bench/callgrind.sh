#!/usr/bin/env bash
# Instructions per unary call in one process of the routed path, counted by
# callgrind (exact where timings on a shared machine are not).
#
#   router-bench/callgrind.sh router|instance|direct|daemon|daemon-policies [N1 N2]
#
# Runs the example `router` + `instance` (or the `direct` server, or the
# `grpc-router serve` daemon + `instance`: `daemon` with no policy,
# `daemon-policies` with every traffic policy on, as `router-bench procs
# --policies` configures them, JWT included) from target/release, the named
# one (the daemon for the daemon modes) under `valgrind --tool=callgrind`, loads it
# with `h2load -c16 -m4` (SayHello, 100-byte payload) for N1 and then N2 calls,
# and prints (I(N2) - I(N1)) / (N2 - N1): start-up is not counted.
# Needs valgrind and h2load (apt-get install -y valgrind nghttp2-client) and
# `cargo build --release -p myservice --bins -p grpc-router`. Extra instance flags
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

secret=callgrind-secret-of-thirty-two-bytes
# An HS256 token for the daemon-policies client (role claim `bench`).
token=$(python3 - "$secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = {"sub": "bench", "iss": "router-bench", "aud": "grpc-router", "role": "bench", "exp": int(time.time()) + 3600}
body = b64(json.dumps(claims).encode())
sig = b64(hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
)
# The daemon's configuration for `$which` (procs --policies' policies).
daemon_config() {
    printf 'router_id = "callgrind"\n[clients]\naddress = "127.0.0.1:0"\n[registrations]\naddress = "127.0.0.1:0"\n[admin]\naddress = "127.0.0.1:0"\n[log]\nlevel = "warn"\n'
    [ "$which" = daemon-policies ] || return 0
    cat <<'TOML'
[auth.jwt]
issuer = "router-bench"
audience = "grpc-router"
hmac_secret_env = "ROUTER_BENCH_JWT_SECRET"
[services."myservice.v1.Greeter"]
default_deadline = "5s"
max_deadline = "30s"
rate_limit = { per_second = 10000000, burst = 1000000 }
client_rate_limit = { key = "peer", per_second = 10000000, burst = 1000000 }
instance_rate_limit = { per_second = 10000000, burst = 1000000 }
max_concurrent_calls = 1000000
retry_policy = { max_attempts = 3, initial_backoff = "10ms", max_backoff = "100ms", backoff_multiplier = 2.0, retryable_status_codes = ["UNAVAILABLE"] }
retry_throttling = { max_tokens = 100, token_ratio = 0.1 }
outlier_detection = { consecutive_failures = 5, failure_rate = 0.5, min_calls = 100, window = "10s", base_ejection = "30s", max_ejected_percent = 50 }
[services."myservice.v1.Greeter".methods.SayHello]
rate_limit = { per_second = 10000000, burst = 1000000 }
max_concurrent_calls = 1000000
retry_policy = { max_attempts = 2, initial_backoff = "10ms", max_backoff = "50ms", backoff_multiplier = 2.0, retryable_status_codes = ["UNAVAILABLE", "RESOURCE_EXHAUSTED"] }
[[services."myservice.v1.Greeter".allow]]
claims = { role = "bench" }
[[services."myservice.v1.Greeter".split]]
labels = { version = "v1" }
weight = 100
TOML
}

wait_for() { # file pattern
    for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1" >&2; exit 1
}

# Instructions the measured process ran for $1 calls.
run() {
    local calls=$1 vg="valgrind --tool=callgrind --callgrind-out-file=$work/cg.out"
    local router_cmd="$bin/router" instance_cmd="$bin/instance" addr pid other="" auth=()
    rm -f "$work"/*.out
    if [ "$which" = daemon ] || [ "$which" = daemon-policies ]; then
        # The policies daemon of an older build may not know every key:
        # POLICIES_CONFIG names another file.
        if [ -n "${POLICIES_CONFIG:-}" ] && [ "$which" = daemon-policies ]; then
            cp "$POLICIES_CONFIG" "$work/router.toml"
        else
            daemon_config >"$work/router.toml"
        fi
        RUST_LOG=warn ROUTER_BENCH_JWT_SECRET=$secret $vg "$bin/grpc-router" serve --config "$work/router.toml" >"$work/server.log" 2>&1 &
        pid=$!
        wait_for "$work/server.log" "listening "
        addr=$(grep -o "clients=[0-9.:]*" "$work/server.log" | head -1 | cut -d= -f2)
        local registrations
        registrations=$(grep -o "registrations=[0-9.:]*" "$work/server.log" | head -1 | cut -d= -f2)
        # shellcheck disable=SC2086
        RUST_LOG=warn "$bin/instance" --router "http://$registrations" --id callgrind --label version=v1 ${INSTANCE_ARGS:-} >"$work/instance.log" 2>&1 &
        other=$!
        wait_for "$work/instance.log" "registered as"
        [ "$which" = daemon-policies ] && auth=(-H "authorization: Bearer $token")
    elif [ "$which" = direct ]; then
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
        -H 'te: trailers' "${auth[@]}" "http://$addr/myservice.v1.Greeter/SayHello" >"$work/h2load.log" 2>&1
    grep -q "$calls succeeded" "$work/h2load.log" || { cat "$work/h2load.log" >&2; exit 1; }
    if [ "$which" = daemon ] || [ "$which" = daemon-policies ]; then
        # h2load counts HTTP answers; the daemon's metrics say every call was OK.
        local admin ok
        admin=$(grep -o "admin=[0-9.:]*" "$work/server.log" | head -1 | cut -d= -f2)
        ok=$(curl -s "http://$admin/metrics" | grep '^grpc_server_handled_total{' | grep 'SayHello' | grep 'grpc_code="OK"' | awk '{s+=$2} END {print s+0}')
        [ "$ok" -ge "$calls" ] || { echo "only $ok of $calls calls ended OK" >&2; exit 1; }
    fi
    # The instance first (it leaves its router), then the measured process,
    # which writes its counts on SIGINT.
    if [ -n "$other" ] && [ "$which" != instance ]; then kill "$other"; wait "$other" || true; fi
    kill -INT "$pid"; wait "$pid" || true
    if [ -n "$other" ]; then kill "$other" 2>/dev/null || true; wait "$other" 2>/dev/null || true; fi
    grep -h "^summary" "$work/cg.out" | awk '{print $2}'
}

a=$(run "$n1")
b=$(run "$n2")
echo "$which: $(( (b - a) / (n2 - n1) )) instructions per call"

#!/usr/bin/env bash
# Interop with another gRPC stack: Python grpcio calls the Rust router.
#
# Installs grpcio and grpcio-tools into a venv under .ci/.cache/venv (once),
# generates Python stubs for myservice.proto, starts the example `router` on
# a free loopback port and two `instance`s registered with it, runs
# examples/myservice/interop/interop_test.py (every method kind, metadata
# including a -bin value, statuses, health, gzip and deflate, large messages,
# the same calls against the `direct` binary, which serves the Greeter without
# a router, for routed-equals-direct checks), then stops everything. Prints `N passed, N failed` at the end of the Python run.
#
# When PyPI cannot be reached (and nothing is cached) it prints
# `SKIPPED: PyPI unreachable` and exits 0; any other failure exits non-zero.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.ci/.cache/venv"
py="$venv/bin/python"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/debug"
step() { echo "==> interop: $*"; }

# --- Python, grpcio and grpcio-tools --------------------------------------
if ! "$py" -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      step "installing python3 and python3-venv with apt-get"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    else
      echo "SKIPPED: python3 with the venv module is not available"
      exit 0
    fi
  fi
  step "creating $venv with grpcio and grpcio-tools"
  rm -rf "$venv"
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --retries 1 --timeout 30 grpcio grpcio-tools >"$root/.ci/.cache/pip.log" 2>&1; then
    if ! "$venv/bin/pip" index versions grpcio --retries 0 --timeout 15 >/dev/null 2>&1; then
      rm -rf "$venv"
      echo "SKIPPED: PyPI unreachable (pip could not install grpcio; see .ci/.cache/pip.log)"
      exit 0
    fi
    cat "$root/.ci/.cache/pip.log" >&2
    echo "interop: pip install grpcio grpcio-tools failed although PyPI is reachable" >&2
    rm -rf "$venv"
    exit 1
  fi
fi
"$py" -c 'import grpc; print("==> interop: grpcio", grpc.__version__)'

tmp="$(mktemp -d)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- stubs ----------------------------------------------------------------
step "generating Python stubs"
mkdir -p "$tmp/stubs"
"$py" -m grpc_tools.protoc \
  -I "$root/examples/myservice/proto" -I "$root/protoc-gen-router/proto" \
  --python_out="$tmp/stubs" --grpc_python_out="$tmp/stubs" \
  myservice/v1/myservice.proto router/v1/options.proto

# --- router and instances -------------------------------------------------
step "building the example binaries"
# The binaries, built as `cargo test --workspace` builds them (one feature
# set for every member): after the test suite this compiles nothing.
(cd "$root" && cargo test -q --workspace --no-run)

# Starts a binary with stdout on a pipe (fd in $started_fd) and stderr in
# $tmp/NAME.log, and waits (bounded) for its first stdout line ($started_line).
start() {
  local name="$1"
  shift
  exec {started_fd}< <(exec "$@" 2>"$tmp/$name.log")
  started_pid=$!
  pids+=("$started_pid")
  if ! read -r -t 60 -u "$started_fd" started_line; then
    echo "interop: $name did not start (no line on stdout within 60s); its log:" >&2
    cat "$tmp/$name.log" >&2
    exit 1
  fi
}

start router "$bin/router" --listen 127.0.0.1:0 --compress-responses gzip,deflate
router_pid=$started_pid
addr="${started_line#listening on }"
step "router listening on $addr"

start direct "$bin/direct" --listen 127.0.0.1:0 --compress-responses gzip,deflate
direct_pid=$started_pid
direct_addr="${started_line#listening on }"
step "direct Greeter listening on $direct_addr"

instances=(instance-a instance-b)
instance_pids=()
for id in "${instances[@]}"; do
  start "$id" "$bin/instance" --router "http://$addr" --id "$id"
  instance_pids+=("$started_pid")
  step "$started_line"
done

# --- the test -------------------------------------------------------------
step "running interop_test.py"
status=0
"$py" "$root/examples/myservice/interop/interop_test.py" \
  --router "$addr" --direct "$direct_addr" --stubs "$tmp/stubs" \
  --instances "$(IFS=,; echo "${instances[*]}")" || status=$?

# --- shutdown: instances drain on SIGINT, the router stops on SIGTERM -------
stop() {
  local name="$1" pid="$2" signal="$3"
  kill "-$signal" "$pid" 2>/dev/null || true
  if timeout 15 tail --pid="$pid" -f /dev/null; then
    # Gone: the cleanup trap must not signal a reused pid.
    local kept=() p
    for p in "${pids[@]}"; do
      [[ "$p" == "$pid" ]] || kept+=("$p")
    done
    pids=("${kept[@]}")
  else
    echo "interop: $name did not exit within 15s of SIG$signal" >&2
    status=1
  fi
}
for i in "${!instances[@]}"; do
  stop "${instances[$i]}" "${instance_pids[$i]}" INT
done
stop router "$router_pid" TERM
stop direct "$direct_pid" TERM

if [[ "$status" != 0 ]]; then
  for log in "$tmp"/*.log; do
    echo "--- $(basename "$log")" >&2
    tail -n 40 "$log" >&2
  done
  echo "interop: FAILED" >&2
fi
exit "$status"

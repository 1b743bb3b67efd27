#!/usr/bin/env bash
# The deployment matrix (tests/matrix): the grpc-router daemon with a Rust and
# a Python instance, with and without registration tokens, client JWTs and
# traffic policies, through every method kind, a reload, SIGTERM with a client
# that stopped reading, and a restart.
#
# Uses the venv .ci/python-bridge.sh makes (grpcio, grpcio-tools, pytest and
# the bridge); skips like it when PyPI could not be reached.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$root/.ci/.cache/venv/bin/python"
target="${CARGO_TARGET_DIR:-$root/target}"

if ! "$py" -c 'import grpc, grpc_tools, pytest, grpc_router_bridge' >/dev/null 2>&1; then
  echo "SKIPPED: the Python venv of .ci/python-bridge.sh is missing (PyPI unreachable?)"
  exit 0
fi

echo "==> matrix: building grpc-router and the example instance"
# The binaries, built as `cargo test --workspace` builds them (one feature
# set for every member): after the test suite this compiles nothing.
(cd "$root" && cargo test -q --workspace --no-run)

stubs="$(mktemp -d)"
trap 'rm -rf "$stubs"' EXIT
echo "==> matrix: pytest tests/matrix"
status=0
(cd "$root" && ROUTER_BIN_DIR="$target/debug" GREETER_STUBS_DIR="$stubs" \
  "$py" -m pytest -q -p no:cacheprovider -rfE tests/matrix) || status=$?
case "$status" in
  0) ;;
  5) echo "matrix: pytest collected no tests" >&2; exit 1 ;;
  *) echo "matrix: pytest failed (exit $status)" >&2; exit "$status" ;;
esac

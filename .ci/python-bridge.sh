#!/usr/bin/env bash
# The Python bridge (bridges/python) behind the Rust router.
#
# Installs grpcio, grpcio-tools, grpcio-status, grpcio-reflection, pytest, mypy
# and the bridge itself (editable, from bridges/python) into the venv
# .ci/interop.sh also uses, .ci/.cache/venv (once: a second run only checks the
# imports), type-checks the package (mypy --strict), builds the example
# binaries and the `grpc-router` daemon, and runs pytest over
# bridges/python/tests: Python instances behind both routers (the example's
# compiled `router` and the daemon, every end-to-end test once with each) on
# free loopback ports through every method kind, metadata, statuses with
# details, deadline, cancel, a 16 MiB message, a stalled stream, drain, a
# mixed fleet with the Rust `instance`, the differential test against a plain
# grpc.aio server, and with the daemon a Python-only service, reflection and
# a restart. Then the latency script (router-bench/python_bridge_latency.py) runs a
# short comparison of routed unary latency to a Rust and a Python instance,
# through each router.
#
# When PyPI cannot be reached (and nothing is cached) it prints
# `SKIPPED: PyPI unreachable` and exits 0; any other failure exits non-zero.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.ci/.cache/venv"
py="$venv/bin/python"
target="${CARGO_TARGET_DIR:-$root/target}"
step() { echo "==> python-bridge: $*"; }

# --- Python and the packages ---------------------------------------------------
# The bridge must be the editable install of this checkout, not a stale copy.
installed() {
  "$py" - "$root/bridges/python/src" >/dev/null 2>&1 <<'PY'
import sys, pathlib
import grpc, grpc_tools, grpc_status, grpc_reflection, pytest, mypy, grpc_router_bridge
src = pathlib.Path(sys.argv[1]).resolve()
sys.exit(0 if src in pathlib.Path(grpc_router_bridge.__file__).resolve().parents else 1)
PY
}

if ! installed; then
  if [[ ! -x "$py" ]]; then
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
    step "creating $venv"
    mkdir -p "$root/.ci/.cache"
    python3 -m venv "$venv"
  fi
  step "installing grpcio, grpcio-tools, grpcio-status, grpcio-reflection, pytest, mypy and bridges/python"
  log="$root/.ci/.cache/pip-python-bridge.log"
  if ! "$venv/bin/pip" install --quiet --retries 1 --timeout 30 \
      grpcio grpcio-tools grpcio-status grpcio-reflection pytest mypy -e "$root/bridges/python" >"$log" 2>&1; then
    if ! "$venv/bin/pip" index versions grpcio --retries 0 --timeout 15 >/dev/null 2>&1; then
      echo "SKIPPED: PyPI unreachable (pip could not install grpcio; see $log)"
      exit 0
    fi
    cat "$log" >&2
    echo "python-bridge: pip install failed although PyPI is reachable" >&2
    exit 1
  fi
  if ! installed; then
    echo "python-bridge: the packages installed but do not import; see $log" >&2
    exit 1
  fi
fi
"$py" -c 'import grpc; print("==> python-bridge: grpcio", grpc.__version__)'

# --- types ----------------------------------------------------------------------
step "mypy --strict bridges/python/src"
(cd "$root/bridges/python" && "$venv/bin/mypy" --no-incremental src/grpc_router_bridge)

# --- the example binaries -------------------------------------------------------
step "building the example binaries and grpc-router"
# The binaries, built as `cargo test --workspace` builds them (one feature
# set for every member): after the test suite this compiles nothing.
(cd "$root" && cargo test -q --workspace --no-run)

# --- pytest -------------------------------------------------------------------
stubs="$(mktemp -d)"
trap 'rm -rf "$stubs"' EXIT
export ROUTER_BIN_DIR="$target/debug" GREETER_STUBS_DIR="$stubs"
step "running pytest bridges/python/tests"
status=0
(cd "$root/bridges/python" && "$py" -m pytest -q -p no:cacheprovider -rfE tests) || status=$?
case "$status" in
  0) ;;
  5) echo "python-bridge: pytest collected no tests" >&2; exit 1 ;;
  *) echo "python-bridge: pytest failed (exit $status)" >&2; exit "$status" ;;
esac

# --- latency, side by side (debug binaries here: CI only proves it runs) ---------
step "routed unary latency, Rust vs Python instance (debug build; see README for release figures)"
for router in compiled daemon; do
  "$py" "$root/router-bench/python_bridge_latency.py" --bin-dir "$target/debug" --calls 500 --log-dir "$stubs" --router "$router"
done

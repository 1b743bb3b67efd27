#!/usr/bin/env bash
# The Python packages as a user installs them, with pip alone.
#
# Builds the protoc-gen-router wheel (maturin, `bindings = "bin"`: the
# binary in a wheel; built with the dev profile here, which shares the
# workspace build's artifacts: a release wheel is `maturin build --release`,
# the same packaging with an optimised binary) and the grpc-router-bridge wheel and sdist (`python -m
# build`; the wheel is built from the sdist, so the sdist is complete), then
# creates a fresh virtualenv and installs both wheels, the bridge with its
# `otel` extra, from the built files with pip (`--no-index`: dependencies
# from a local wheelhouse) and a PATH with no cargo or rustc. In that venv,
# pytest runs bridges/python/tests_installed: grpc_tools.protoc with the
# installed plugin generates the Greeter's modules (and no router proto), the
# generated service on the installed bridge answers a call through the
# example router, and a client's trace goes through the daemon (its default
# `otel` feature) into the Python instance, seen by an OTLP receiver.
#
# Tools (maturin, build, setuptools) go into .ci/.cache/packaging-venv and the
# dependencies' wheels into .ci/.cache/wheelhouse once; a second run only
# rebuilds what changed. When PyPI cannot be reached (and nothing is cached)
# it prints `SKIPPED: PyPI unreachable` and exits 0.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.ci/.cache"
tools="$cache/packaging-venv"
wheelhouse="$cache/wheelhouse"
dist="$cache/dist"
fresh="$cache/fresh-venv"
target="${CARGO_TARGET_DIR:-$root/target}"
started=$SECONDS
step() { echo "==> python-packages [$((SECONDS - started))s]: $*"; }

# Dependencies the fresh venv installs from the wheelhouse: the bridge's own,
# the generator's (grpcio-tools), the otel extra with an SDK and an exporter,
# and the test runner.
deps=(grpcio grpcio-tools "opentelemetry-api>=1.20" opentelemetry-sdk
      opentelemetry-exporter-otlp-proto-grpc opentelemetry-proto pytest)

pypi_unreachable() {
  ! "$1" -m pip index versions pip --retries 0 --timeout 15 >/dev/null 2>&1
}

# --- tools ------------------------------------------------------------------------
if ! "$tools/bin/python" -c 'import build, setuptools' >/dev/null 2>&1 \
    || ! "$tools/bin/maturin" --version >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "SKIPPED: python3 with the venv module is not available"
    exit 0
  fi
  step "installing maturin, build and setuptools into $tools"
  mkdir -p "$cache"
  python3 -m venv "$tools"
  log="$cache/pip-python-packages.log"
  if ! "$tools/bin/pip" install --quiet --retries 1 --timeout 30 \
      "maturin>=1.5,<2" build "setuptools>=77" wheel >"$log" 2>&1; then
    if pypi_unreachable "$tools/bin/python"; then
      echo "SKIPPED: PyPI unreachable (pip could not install maturin; see $log)"
      exit 0
    fi
    cat "$log" >&2
    echo "python-packages: pip install failed although PyPI is reachable" >&2
    exit 1
  fi
fi
"$tools/bin/maturin" --version

# --- the dependencies' wheels (once) ------------------------------------------------
stamp="$wheelhouse/.requirements"
if [[ "$(cat "$stamp" 2>/dev/null)" != "${deps[*]}" ]]; then
  step "downloading the dependencies' wheels into $wheelhouse"
  rm -rf "$wheelhouse"
  mkdir -p "$wheelhouse"
  log="$cache/pip-wheelhouse.log"
  if ! "$tools/bin/pip" download --quiet --retries 1 --timeout 30 --only-binary :all: \
      -d "$wheelhouse" "${deps[@]}" >"$log" 2>&1; then
    if pypi_unreachable "$tools/bin/python"; then
      echo "SKIPPED: PyPI unreachable (pip could not download the dependencies; see $log)"
      exit 0
    fi
    cat "$log" >&2
    echo "python-packages: pip download failed although PyPI is reachable" >&2
    exit 1
  fi
  echo "${deps[*]}" >"$stamp"
fi

# --- the packages ----------------------------------------------------------------------
rm -rf "$dist"
mkdir -p "$dist"
step "maturin build --profile dev (protoc-gen-router wheel)"
t=$SECONDS
(cd "$root/protoc-gen-router" && "$tools/bin/maturin" build --profile dev --locked --quiet --out "$dist")
echo "python-packages: protoc-gen-router wheel built in $((SECONDS - t)) s"

step "python -m build (grpc-router-bridge sdist and wheel)"
t=$SECONDS
# The build tree goes to a temporary copy so the checkout keeps no build/.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp -r "$root/bridges/python/." "$src/"
rm -rf "$src/build" "$src"/src/*.egg-info
"$tools/bin/python" -m build --no-isolation --outdir "$dist" "$src" >"$cache/build-bridge.log" 2>&1 \
  || { cat "$cache/build-bridge.log" >&2; exit 1; }
echo "python-packages: bridge sdist and wheel built in $((SECONDS - t)) s"
ls -l "$dist"

# --- the Rust binaries the tests run ----------------------------------------------------
step "building the example router and instance, and the daemon"
# The binaries, built as `cargo test --workspace` builds them (one feature
# set for every member): after the test suite this compiles nothing.
(cd "$root" && cargo test -q --workspace --no-run)
bins="$(mktemp -d)"
trap 'rm -rf "$src" "$bins"' EXIT
# Copies: a later build of another feature set rewrites target/debug.
cp "$target/debug/router" "$target/debug/instance" "$target/debug/grpc-router" "$bins/"

# --- a fresh venv, no Rust toolchain on PATH ---------------------------------------------
step "installing the wheels into a fresh venv $fresh"
rm -rf "$fresh"
python3 -m venv "$fresh"
clean_path="$fresh/bin"
IFS=: read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  [[ -z "$dir" || -x "$dir/cargo" || -x "$dir/rustc" || -x "$dir/maturin" ]] && continue
  clean_path="$clean_path:$dir"
done
if PATH="$clean_path" command -v cargo >/dev/null || PATH="$clean_path" command -v rustc >/dev/null; then
  echo "python-packages: cargo or rustc still on the cleaned PATH" >&2
  exit 1
fi
plugin_wheel=("$dist"/protoc_gen_router-*.whl)
bridge_wheel=("$dist"/grpc_router_bridge-*.whl)
PATH="$clean_path" "$fresh/bin/pip" install --quiet --no-index --only-binary :all: \
  --find-links "$wheelhouse" \
  "${plugin_wheel[0]}" "${bridge_wheel[0]}[otel]" "${deps[@]}"
PATH="$clean_path" "$fresh/bin/python" - <<'PY'
import shutil, sys, pathlib
import grpc_router_bridge, opentelemetry.trace
plugin = shutil.which("protoc-gen-router")
assert plugin and pathlib.Path(plugin).parent == pathlib.Path(sys.executable).parent, plugin
print("==> python-packages: protoc-gen-router at", plugin, "; bridge at", grpc_router_bridge.__file__)
PY

step "pytest bridges/python/tests_installed (in the fresh venv)"
status=0
(cd "$root/bridges/python/tests_installed" && PATH="$clean_path" BIN_DIR="$bins" \
  "$fresh/bin/python" -m pytest -q -p no:cacheprovider -rfE .) || status=$?
case "$status" in
  0) ;;
  5) echo "python-packages: pytest collected no tests" >&2; exit 1 ;;
  *) echo "python-packages: pytest failed (exit $status)" >&2; exit "$status" ;;
esac
step "done"

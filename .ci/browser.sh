#!/usr/bin/env bash
# A real browser through the router: headless Chromium loads a page
# (tests/browser) that uses the official Connect-Web client (npm
# @connectrpc/connect-web, bundled with esbuild) to call the Greeter's unary
# SayHello and server-streaming StreamGreetings through the daemon, with the
# Connect transport (JSON and binary) and the gRPC-Web transport, pinned
# (x-router-instance) to a Rust instance and to a Python instance. The page
# comes from another loopback port, so every call is cross-origin: the
# daemon runs with `[clients] grpc_web = true, connect = true` and
# `[clients.cors] allowed_origins` naming the page's origin. The page runs
# twice: against a daemon whose clients' listener is plain HTTP (Chromium
# speaks HTTP/1.1 to it) and one with TLS and a certificate made here with
# openssl (Chromium speaks HTTP/2; each response's version is checked over
# the DevTools protocol); each instance registers with both. playwright-core
# drives Debian's Chromium (tests/browser/drive.mjs): each transport ×
# instance × call must show its replies and the instance that answered, a
# requested failure must arrive as not_found, a screenshot is taken; the
# same page from an origin the daemon does not allow must see every call
# fail, blocked by CORS.
#
# Installs, once: Debian's chromium (apt-get, as root) when no chromium
# is on the PATH; the npm packages pinned in tests/browser/package-lock.json
# (`npm ci` into .ci/.cache/browser, again only when the lock changes).
# Checks that tests/browser/gen is what `buf generate --template
# tests/browser/buf.gen.yaml` makes (buf from .ci/.cache/buf, as
# .ci/buf-check.sh installs it). The Python half needs the venv of
# .ci/python-bridge.sh and is SKIPPED without it.
#
# The screenshot goes to $target/browser.png; to refresh the book's copy:
#   BROWSER_SCREENSHOT=docs/src/images/browser.png bash .ci/browser.sh
#
# Time: about 8 s with everything installed; a cold install adds about 20 s
# (apt-get update and chromium) and 5 s (npm ci, buf).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
cache="$root/.ci/.cache/browser"
bin="$cache/node_modules/.bin"
py="$root/.ci/.cache/venv/bin/python"
screenshot="${BROWSER_SCREENSHOT:-$target/browser.png}"

started=$SECONDS
say() { echo "browser: [$((SECONDS - started))s] $*"; }
die() { echo "browser: FAIL: $*" >&2; exit 1; }

# --- Chromium ---------------------------------------------------------------
# shellcheck source=lib/install.sh
source "$root/.ci/lib/install.sh"
ensure_chromium browser
say "$("$chromium" --version 2> /dev/null)"

# --- npm packages -------------------------------------------------------------
command -v node > /dev/null && command -v npm > /dev/null || die "node and npm are needed (Node.js 20 or later)"
if ! cmp -s tests/browser/package-lock.json "$cache/package-lock.json" \
    || [[ ! -f "$cache/node_modules/.package-lock.json" ]]; then
  say "installing tests/browser/package-lock.json with npm ci into $cache"
  mkdir -p "$cache"
  cp tests/browser/package.json tests/browser/package-lock.json "$cache/"
  (cd "$cache" && timeout 600 npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $cache failed"
fi
for tool in esbuild tsc protoc-gen-es; do
  [[ -x "$bin/$tool" ]] || die "$bin/$tool is missing after npm ci"
done

# --- the generated TypeScript is current --------------------------------------
ensure_buf "$root"
work="$(mktemp -d)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PATH="$bin:$PATH" "$buf" generate --template tests/browser/buf.gen.yaml --output "$work/gen" \
  || die "buf generate --template tests/browser/buf.gen.yaml failed"
if ! diff -r tests/browser/gen "$work/gen/tests/browser/gen" > "$work/gen.diff"; then
  cat "$work/gen.diff" >&2
  die "tests/browser/gen differs from buf generate --template tests/browser/buf.gen.yaml: regenerate and commit it (see that file)"
fi

# --- the page -------------------------------------------------------------------
# Staged beside the packages so that imports resolve from $cache/node_modules.
page="$cache/page"
rm -rf "$page"
mkdir -p "$page/dist"
cp -r tests/browser/main.ts tests/browser/tsconfig.json tests/browser/serve.mjs tests/browser/drive.mjs \
  tests/browser/gen "$page/"
cp tests/browser/index.html "$page/dist/"
"$bin/tsc" -p "$page/tsconfig.json" || die "tests/browser/main.ts does not type-check"
"$bin/esbuild" "$page/main.ts" --bundle --format=iife --target=es2022 --sourcemap \
  --outfile="$page/dist/main.js" --log-level=warning || die "esbuild could not bundle tests/browser/main.ts"
say "page bundled: $(wc -c < "$page/dist/main.js") bytes of JavaScript"

# --- the daemon and the instances -----------------------------------------------
# The binaries, built as `cargo test --workspace` builds them (one feature
# set for every member): after the test suite this compiles nothing.
cargo test -q --workspace --no-run
daemon="$target/debug/grpc-router"
instance="$target/debug/instance"
for tool in "$daemon" "$instance"; do
  [[ -x "$tool" ]] || die "$tool is missing after the build"
done

show_logs() {
  local log
  for log in "$work"/*.err; do
    [[ -s "$log" ]] || continue
    echo "--- $log (last lines)" >&2
    tail -n 20 "$log" >&2
  done
}

# Waits up to 20 s for a line matching $2 in the file $1.
wait_for() {
  local _
  for _ in $(seq 400); do
    grep -q "$2" "$1" 2> /dev/null && return 0
    sleep 0.05
  done
  return 1
}

node "$page/serve.mjs" "$page/dist" > "$work/serve.out" 2> "$work/serve.err" &
pids+=("$!")
wait_for "$work/serve.out" '^serving ' || { show_logs; die "the page's server printed no address"; }
allowed="$(sed -nE 's/^serving allowed=([^ ]+) .*/\1/p' "$work/serve.out")"
denied="$(sed -nE 's/.* denied=([^ ]+)$/\1/p' "$work/serve.out")"

# Two daemons with the same CORS settings: one serves its clients over
# plain HTTP (Chromium speaks HTTP/1.1 to it), one over TLS with a
# certificate made here (Chromium speaks HTTP/2 to it; ALPN offers only h2).
# Each instance registers with both.
start_daemon() { # name, extra TOML for [clients]
  cat > "$work/$1.toml" << TOML
router_id = "browser-$1"
[clients]
address = "127.0.0.1:0"
grpc_web = true
connect = true
$2
[clients.cors]
allowed_origins = ["$allowed"]
max_age = "1m"
[registrations]
address = "127.0.0.1:0"
[shutdown]
grace = "1s"
TOML
  "$daemon" serve --config "$work/$1.toml" > "$work/$1.out" 2> "$work/$1.err" &
  pids+=("$!")
  wait_for "$work/$1.out" '^listening ' || { show_logs; die "the $1 daemon printed no listening line within 20 s"; }
}
field() { # file, field
  sed -nE "s/^listening .*$2=([^ ]+).*/\\1/p" "$1"
}
start_daemon http ""
daemons=(http)
if command -v openssl > /dev/null; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$work/tls.key" -out "$work/tls.crt" 2> "$work/openssl.err" \
    || { cat "$work/openssl.err" >&2; die "openssl could not make the TLS daemon's certificate"; }
  start_daemon tls "tls = { cert = \"$work/tls.crt\", key = \"$work/tls.key\" }"
  daemons+=(tls)
else
  echo "SKIPPED: the TLS daemon (HTTP/2 from the browser): openssl is missing"
fi
routers=()
pages=()
query() { echo "instances=$instances&router=$1"; }
for name in "${daemons[@]}"; do
  routers+=(--router "http://$(field "$work/$name.out" registrations)")
done
say "page origins: allowed $allowed, denied $denied; daemons: ${daemons[*]}"

"$instance" "${routers[@]}" --id rust-1 > "$work/rust-1.out" 2> "$work/rust-1.err" &
pids+=("$!")
instances=rust-1
if "$py" -c 'import grpc, grpc_tools, grpc_router_bridge' > /dev/null 2>&1; then
  GREETER_STUBS_DIR="$work/stubs" "$py" examples/python-greeter/greeter.py \
    "${routers[@]}" --id py-1 > "$work/py-1.out" 2> "$work/py-1.err" &
  pids+=("$!")
  instances=rust-1,py-1
else
  echo "SKIPPED: the Python half (py-1): the venv of .ci/python-bridge.sh is missing (PyPI unreachable?)"
fi
# Registered with every daemon, as each daemon logs it.
for name in "${daemons[@]}"; do
  for id in ${instances//,/ }; do
    wait_for "$work/$name.err" "instance registered.* instance=\"$id\"" \
      || { show_logs; die "instance $id did not register with the $name daemon within 20 s"; }
  done
done
say "registered: $instances with ${daemons[*]}"
clients="$(field "$work/http.out" clients)"
pages+=(--page "$allowed/index.html?$(query "http://$clients")")
if [[ " ${daemons[*]} " == *" tls "* ]]; then
  pages+=(--page "$allowed/index.html?$(query "https://$(field "$work/tls.out" clients)")")
fi

# --- the browser ------------------------------------------------------------------
mkdir -p "$(dirname "$screenshot")"
rm -f "$screenshot"
timeout 120 node "$page/drive.mjs" --chromium "$chromium" --instances "$instances" \
  "${pages[@]}" --denied "$denied/index.html?$(query "http://$clients")" \
  --screenshot "$screenshot" --timeout-ms 30000 \
  || { show_logs; die "the browser test failed (above: what differed, the page's console)"; }
say "OK: Connect-Web (connect+json, connect+proto, grpc-web) from a real Chromium through the daemon (${daemons[*]}) to $instances; CORS refused the other origin"

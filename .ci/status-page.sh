#!/usr/bin/env bash
# The status page in a real browser: the daemon with an admin listener, two
# example instances registered with it, and headless Chromium driven over the
# DevTools protocol (.ci/status_page_browser.py, Python standard library):
# the server's render without JavaScript lists both instances, calls made
# while the page is open show up without a reload (the 2 s refresh from
# /status.json), a reload without JavaScript shows them too, a screenshot
# is taken, and a third instance whose id and label are markup shows as text
# in both renders.
#
# The screenshot goes to $target/status-page.png, so CI leaves the tree
# clean; to refresh the book's copy:
#   STATUS_PAGE_SCREENSHOT=docs/src/images/status-page.png bash .ci/status-page.sh
#
# Installs Debian's chromium when `chromium` is not on PATH (needs root and
# apt, as on CI). Builds the debug daemon and the example's instance and
# client binaries.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
screenshot="${STATUS_PAGE_SCREENSHOT:-$target/status-page.png}"

say() { echo "status-page: $*" >&2; }
die() { say "FAIL: $*"; exit 1; }

# shellcheck source=lib/install.sh
source "$root/.ci/lib/install.sh"
ensure_chromium status-page
command -v python3 > /dev/null || die "python3 is needed to drive the browser"

say "building the daemon and the example instance and client"
# The binaries, built as `cargo test --workspace` builds them (one feature
# set for every member): after the test suite this compiles nothing.
cargo test -q --workspace --no-run
daemon="$target/debug/grpc-router"
instance="$target/debug/instance"
client="$target/debug/client"
for tool in "$daemon" "$instance" "$client"; do
  [[ -x "$tool" ]] || die "$tool is missing after the build"
done

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

show_logs() {
  local log
  for log in "$work"/*.err; do
    [[ -f "$log" ]] || continue
    echo "--- $log (last lines)" >&2
    tail -n 20 "$log" >&2
  done
}

cat > "$work/router.toml" << 'TOML'
router_id = "status-page-ci"
[clients]
address = "127.0.0.1:0"
[registrations]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[shutdown]
grace = "2s"
TOML

"$daemon" serve --config "$work/router.toml" > "$work/daemon.out" 2> "$work/daemon.err" &
pids+=("$!")
for _ in $(seq 200); do
  grep -q '^listening ' "$work/daemon.out" && break
  sleep 0.05
done
line="$(grep '^listening ' "$work/daemon.out")" || { show_logs; die "the daemon printed no listening line within 10 s"; }
field() { sed -E "s/.* $1=([^ ]+).*/\\1/" <<< "$line"; }
clients="$(field clients)"
registrations="$(field registrations)"
admin="$(field admin)"
[[ -n "$admin" && "$admin" != "$line" ]] || die "the daemon reports no admin listener: $line"
say "daemon: clients $clients, registrations $registrations, admin $admin"

"$instance" --router "http://$registrations" --id page-a --label zone=eu-west > /dev/null 2> "$work/instance-a.err" &
pids+=("$!")
"$instance" --router "http://$registrations" --id page-b --label zone=us-east --weight 2 > /dev/null 2> "$work/instance-b.err" &
pids+=("$!")

# Both registered, as /status.json says.
registered=false
for _ in $(seq 200); do
  if python3 - "http://$admin/status.json" << 'PY' 2> /dev/null; then
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
ids = {i["id"] for s in status["services"] for i in s["instances"]}
sys.exit(0 if {"page-a", "page-b"} <= ids else 1)
PY
    registered=true
    break
  fi
  sleep 0.1
done
$registered || { show_logs; die "page-a and page-b did not both register within 20 s"; }

# Some traffic before the first load, so the page has numbers to show.
timeout 60 "$client" --router "http://$clients" --unary-calls 20 > /dev/null 2> "$work/client.err" \
  || { show_logs; die "the first calls through the daemon failed"; }

mkdir -p "$(dirname "$screenshot")"
hostile_id='<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
timeout 240 python3 "$root/.ci/status_page_browser.py" \
  --chromium "$chromium" --url "http://$admin/" --screenshot "$screenshot" --id page-a --id page-b \
  --calls "timeout 60 '$client' --router 'http://$clients' --unary-calls 40" \
  --hostile-id "$hostile_id" \
  --hostile "'$instance' --router 'http://$registrations' --id '$hostile_id' --label 'zone=<b>bold</b>'" \
  || { show_logs; die "the browser check failed"; }

say "OK: both instances on the page, counts refreshed live and on reload, hostile strings shown as text, screenshot in $screenshot"

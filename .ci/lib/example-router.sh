# Sourced by the CI checks that call the example router with an unmodified
# client (.ci/grpc-web.sh, .ci/connect.sh):
#
#   start_example_router NAME INSTANCE_ID
#
# builds the binaries as `cargo test --workspace` builds them (one feature set
# for every member: after the test suite this compiles nothing), starts
# target/debug/router on a free loopback port and target/debug/instance
# registered as INSTANCE_ID, and sets `address` (host:port) and `work` (a
# temporary directory). Both processes are killed and `work` removed on exit.
# NAME prefixes the error messages. Needs `root` and `target` set.

start_example_router() {
  local name=$1 id=$2
  (cd "$root" && cargo test -q --workspace --no-run)
  work="$(mktemp -d)"
  pids=()
  trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"' EXIT

  "$target/debug/router" --listen 127.0.0.1:0 > "$work/router.out" 2> "$work/router.err" &
  pids+=("$!")
  for _ in $(seq 200); do
    grep -q '^listening on ' "$work/router.out" && break
    sleep 0.05
  done
  address="$(sed -n 's/^listening on //p' "$work/router.out" | head -1)"
  [[ -n "$address" ]] || { cat "$work/router.err" >&2; echo "$name: the router printed no address" >&2; exit 1; }

  "$target/debug/instance" --router "http://$address" --id "$id" > "$work/instance.out" 2> "$work/instance.err" &
  pids+=("$!")
  for _ in $(seq 200); do
    grep -q '^registered as ' "$work/instance.out" && break
    sleep 0.05
  done
  grep -q "^registered as $id" "$work/instance.out" || { cat "$work/instance.err" >&2; echo "$name: the instance did not register" >&2; exit 1; }
}

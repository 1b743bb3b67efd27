#!/usr/bin/env bash
# The daemon as a user runs it: the `grpc-router` binary with a config
# file (gRPC-Web and Connect on), the unchanged example instance registering with it, `buf curl` listing,
# describing and calling the Greeter through reflection alone, `grpc-router
# status`, and a SIGTERM that drains and exits 0.
#
# Needs target/debug/grpc-router (or DAEMON=<path>, for example a release
# build) and target/debug/instance (.ci/run builds both) and buf (installed by .ci/buf-check.sh into .ci/.cache/buf).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
daemon="${DAEMON:-$target/debug/grpc-router}"
instance="$target/debug/instance"
buf="$root/.ci/.cache/buf/node_modules/.bin/buf"
for tool in "$daemon" "$instance" "$buf"; do
  [[ -x "$tool" ]] || { echo "daemon-smoke: $tool is missing" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/router.toml" <<'TOML'
router_id = "smoke"
[clients]
address = "127.0.0.1:0"
grpc_web = true
connect = true
[registrations]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[shutdown]
grace = "5s"
TOML
"$daemon" check-config "$work/router.toml" > /dev/null

"$daemon" serve --config "$work/router.toml" > "$work/stdout" 2> "$work/stderr" &
daemon_pid=$!
pids+=("$daemon_pid")
for _ in $(seq 200); do
  grep -q '^listening ' "$work/stdout" && break
  sleep 0.05
done
line="$(grep '^listening ' "$work/stdout")" || { cat "$work/stderr" >&2; echo "daemon-smoke: no listening line" >&2; exit 1; }
clients="$(sed -E 's/.*clients=([^ ]+).*/\1/' <<< "$line")"
registrations="$(sed -E 's/.*registrations=([^ ]+).*/\1/' <<< "$line")"
admin="$(sed -E 's/.*admin=([^ ]+).*/\1/' <<< "$line")"
echo "daemon: clients $clients, registrations $registrations, admin $admin" >&2

"$instance" --router "http://$registrations" --id smoke-a > /dev/null 2> "$work/instance.err" &
pids+=("$!")
for _ in $(seq 200); do
  if "$daemon" status --router "http://$admin" --json 2>/dev/null | grep -q '"id": "smoke-a"'; then
    break
  fi
  sleep 0.05
done
"$daemon" status --router "http://$admin" | tee "$work/status" >&2
grep -q smoke-a "$work/status" || { echo "daemon-smoke: the instance did not register" >&2; exit 1; }

curl_args=(--protocol grpc --http2-prior-knowledge)
services="$("$buf" curl "${curl_args[@]}" --list-services "http://$clients")"
echo "$services" >&2
grep -qx 'myservice.v1.Greeter' <<< "$services" || { echo "daemon-smoke: reflection does not list the Greeter" >&2; exit 1; }
methods="$("$buf" curl "${curl_args[@]}" --list-methods "http://$clients")"
grep -qx 'myservice.v1.Greeter/SayHello' <<< "$methods" || { echo "daemon-smoke: reflection does not describe SayHello" >&2; exit 1; }
reply="$("$buf" curl "${curl_args[@]}" -d '{"name":"Ada"}' "http://$clients/myservice.v1.Greeter/SayHello")"
echo "$reply" >&2
grep -q '"Hello, Ada!"' <<< "$reply" || { echo "daemon-smoke: the call through the daemon failed" >&2; exit 1; }
# gRPC-Web ([clients] grpc_web) and Connect ([clients] connect), over
# HTTP/1.1 and HTTP/2 (prior knowledge): a unary call and a server stream
# with buf curl each, then JSON from plain curl, to the learnt Greeter.
for protocol in grpcweb connect; do
  for http in http1 http2; do
    flags=(--protocol "$protocol")
    [[ "$http" == http2 ]] && flags+=(--http2-prior-knowledge)
    reply="$("$buf" curl "${flags[@]}" -d '{"name":"Ada"}' "http://$clients/myservice.v1.Greeter/SayHello")"
    grep -q '"Hello, Ada!"' <<< "$reply" || { echo "$reply" >&2; echo "daemon-smoke: the $protocol call over $http through the daemon failed" >&2; exit 1; }
    streamed="$("$buf" curl "${flags[@]}" -d '{"name":"Ada","count":3}' "http://$clients/myservice.v1.Greeter/StreamGreetings" | grep -c '"instanceId": "smoke-a"')" || true
    [[ "$streamed" == 3 ]] || { echo "daemon-smoke: the $protocol server stream over $http gave $streamed of 3 messages" >&2; exit 1; }
  done
done
reply="$(curl -sS --max-time 10 -X POST -H 'Content-Type: application/json' -d '{"name":"Ada"}' "http://$clients/myservice.v1.Greeter/SayHello")"
[[ "$reply" == '{"message":"Hello, Ada!","instanceId":"smoke-a"}' ]] || { echo "$reply" >&2; echo "daemon-smoke: curl with JSON through the daemon failed" >&2; exit 1; }

kill -TERM "$daemon_pid"
status=0
wait "$daemon_pid" || status=$?
[[ $status -eq 0 ]] || { cat "$work/stderr" >&2; echo "daemon-smoke: the daemon exited $status after SIGTERM" >&2; exit 1; }
echo "daemon-smoke: buf curl listed, described and called the Greeter through the daemon (gRPC, gRPC-Web, Connect and JSON); SIGTERM exited 0" >&2

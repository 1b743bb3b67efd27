#!/usr/bin/env bash
# The Connect protocol through the router, with unmodified clients: the
# example's router (RouterServer with connect on) and an instance;
# `buf curl --protocol connect` calls a unary and a server-streaming method
# through reflection, over HTTP/1.1 and over HTTP/2 (prior knowledge), and
# plain `curl` POSTs JSON to a unary method, as a shell script or a webhook
# would.
#
# Needs target/debug/{router,instance} (built here as the test suite builds
# them), buf (installed by .ci/buf-check.sh into .ci/.cache/buf) and curl.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
buf="$root/.ci/.cache/buf/node_modules/.bin/buf"
[[ -x "$buf" ]] || { echo "connect: $buf is missing (run .ci/buf-check.sh)" >&2; exit 1; }
command -v curl > /dev/null || { echo "connect: curl is missing" >&2; exit 1; }
# shellcheck source=lib/example-router.sh
source "$root/.ci/lib/example-router.sh"
start_example_router connect connect-a

fail() { # output, message
  echo "$1" >&2
  echo "connect: $2" >&2
  exit 1
}
for transport in http1 http2; do
  flags=()
  [[ $transport == http2 ]] && flags=(--http2-prior-knowledge)
  out="$(timeout 30 "$buf" curl --protocol connect "${flags[@]}" \
    -d '{"name":"Ada"}' "http://$address/myservice.v1.Greeter/SayHello" 2>&1)" \
    || fail "$out" "unary over $transport failed"
  grep -q '"instanceId": "connect-a"' <<< "$out" || fail "$out" "unary over $transport did not answer from connect-a"
  echo "connect: buf curl unary over $transport OK"

  out="$(timeout 30 "$buf" curl --protocol connect "${flags[@]}" \
    -d '{"name":"Grace","count":3}' "http://$address/myservice.v1.Greeter/StreamGreetings" 2>&1)" \
    || fail "$out" "server stream over $transport failed"
  streamed="$(grep -c '"instanceId": "connect-a"' <<< "$out" || true)"
  [[ "$streamed" == 3 ]] || fail "$out" "server stream over $transport gave $streamed of 3 messages"
  echo "connect: buf curl server stream over $transport OK (3 messages)"

  # An error status reaches the client as its Connect code.
  if out="$(timeout 30 "$buf" curl --protocol connect "${flags[@]}" \
      -d '{"name":"fail:5"}' "http://$address/myservice.v1.Greeter/SayHello" 2>&1)"; then
    fail "$out" "a failing call over $transport succeeded"
  fi
  grep -qi 'not_found' <<< "$out" || fail "$out" "the status over $transport was not not_found"
  echo "connect: buf curl not_found over $transport OK"
done

# Plain curl with JSON, as a shell script sends it.
out="$(curl -sS --max-time 30 -X POST -H 'Content-Type: application/json' \
  -d '{"name":"Ada"}' "http://$address/myservice.v1.Greeter/SayHello")" \
  || fail "$out" "curl with JSON failed"
[[ "$out" == '{"message":"Hello, Ada!","instanceId":"connect-a"}' ]] \
  || fail "$out" "curl with JSON answered something else"
echo "connect: curl with JSON OK: $out"

# An error: the spec's HTTP status and Connect's JSON error.
status="$(curl -sS --max-time 30 -o "$work/error.json" -w '%{http_code}' -X POST \
  -H 'Content-Type: application/json' -d '{"name":"fail:5"}' \
  "http://$address/myservice.v1.Greeter/SayHello")"
[[ "$status" == 404 ]] || fail "$(cat "$work/error.json")" "curl got HTTP $status for not_found, not 404"
grep -q '"code":"not_found"' "$work/error.json" || fail "$(cat "$work/error.json")" "the error body is not Connect's"
echo "connect: curl error OK: HTTP $status $(cat "$work/error.json")"
echo "connect: buf curl --protocol connect (HTTP/1.1 and HTTP/2, unary and server streaming) and curl with JSON called the router"

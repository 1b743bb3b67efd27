#!/usr/bin/env bash
# gRPC-Web through the router, with an unmodified client: the example's
# router (RouterServer with grpc_web on) and an instance, and `buf curl
# --protocol grpcweb` calling a unary and a server-streaming method through
# reflection, over HTTP/1.1 and over HTTP/2 (prior knowledge).
#
# Needs target/debug/{router,instance} (built here as the test suite builds
# them) and buf (installed by .ci/buf-check.sh into .ci/.cache/buf).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
buf="$root/.ci/.cache/buf/node_modules/.bin/buf"
[[ -x "$buf" ]] || { echo "grpc-web: $buf is missing (run .ci/buf-check.sh)" >&2; exit 1; }
# shellcheck source=lib/example-router.sh
source "$root/.ci/lib/example-router.sh"
start_example_router grpc-web web-a

check() { # what, expected text, buf curl arguments...
  local what=$1 expected=$2
  shift 2
  local out
  if ! out="$(timeout 30 "$buf" curl --protocol grpcweb "$@" 2>&1)"; then
    echo "$out" >&2
    echo "grpc-web: $what failed" >&2
    exit 1
  fi
  if ! grep -q "$expected" <<< "$out"; then
    echo "$out" >&2
    echo "grpc-web: $what did not answer $expected" >&2
    exit 1
  fi
  echo "grpc-web: $what OK"
}
for transport in http1 http2; do
  flags=()
  [[ $transport == http2 ]] && flags=(--http2-prior-knowledge)
  check "unary over $transport" '"instanceId": "web-a"' "${flags[@]}" \
    -d '{"name":"Ada"}' "http://$address/myservice.v1.Greeter/SayHello"
  streamed="$(timeout 30 "$buf" curl --protocol grpcweb "${flags[@]}" \
    -d '{"name":"Grace","count":3}' "http://$address/myservice.v1.Greeter/StreamGreetings" | grep -c '"instanceId": "web-a"')" || true
  if [[ "$streamed" != 3 ]]; then
    echo "grpc-web: server stream over $transport gave $streamed of 3 messages" >&2
    exit 1
  fi
  echo "grpc-web: server stream over $transport OK (3 messages)"
  # An error status reaches the client as its code.
  if out="$(timeout 30 "$buf" curl --protocol grpcweb "${flags[@]}" \
      -d '{"name":"fail:5"}' "http://$address/myservice.v1.Greeter/SayHello" 2>&1)"; then
    echo "$out" >&2
    echo "grpc-web: a failing call over $transport succeeded" >&2
    exit 1
  fi
  grep -qi 'not_found' <<< "$out" || { echo "$out" >&2; echo "grpc-web: the status over $transport was not NOT_FOUND" >&2; exit 1; }
  echo "grpc-web: NOT_FOUND over $transport OK"
done
echo "grpc-web: buf curl --protocol grpcweb called unary and server-streaming methods over HTTP/1.1 and HTTP/2"

#!/usr/bin/env bash
# Runs protoc-gen-router over a large corpus of real public protos (the npm
# package google-proto-files: googleapis and protobuf), compiling each file
# with services with protox, generating, and compiling every emitted router
# proto again. Panics and emitted protos that do not compile fail the run;
# user-facing validation errors are counted and printed.
#
# The corpus is installed into .ci/.cache/corpus on first use.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.ci/.cache/corpus"
dir="$cache/node_modules/google-proto-files"

if [[ ! -d "$dir" ]]; then
  echo "installing google-proto-files into $cache" >&2
  mkdir -p "$cache"
  npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$cache" google-proto-files >&2
fi

cd "$root"
ROUTER_CORPUS_DIR="$dir" cargo test -p protoc-gen-router --test corpus -- --ignored --nocapture

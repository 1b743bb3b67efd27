#!/usr/bin/env bash
# Regenerates examples/myservice/gen and examples/buf-user/gen with `buf
# generate` (the locally built protoc-gen-router) and fails when the
# checked-in output is stale. buf-user is a user-style module: two files of one
# package, Google's well-known types, rust=true and router options from a
# sidecar file.
#
# buf is installed from npm (@bufbuild/buf) into .ci/.cache on first use.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/install.sh
source "$root/.ci/lib/install.sh"
ensure_buf "$root"

cd "$root"
# The binaries, built as `cargo test --workspace` builds them (one feature
# set for every member): after the test suite this compiles nothing.
cargo test -q --workspace --no-run
"$buf" --version >&2
"$buf" build
"$buf" generate
"$buf" generate --template examples/buf-user/buf.gen.yaml

# Changes to tracked files, then files that are new (not yet committed).
status=0
git diff --exit-code -- examples/myservice/gen examples/buf-user/gen || status=1
untracked="$(git ls-files --others --exclude-standard -- examples/myservice/gen examples/buf-user/gen)"
if [[ -n "$untracked" ]]; then
  echo "not committed: $untracked" >&2
  status=1
fi
if [[ $status -ne 0 ]]; then
  echo "examples/*/gen differs from \`buf generate\`: commit the regenerated files" >&2
  exit 1
fi
echo "buf generate: examples/myservice/gen and examples/buf-user/gen are up to date" >&2

#!/usr/bin/env bash
# Regenerates examples/myservice/gen with `buf generate` (the locally built
# protoc-gen-router) and fails when the checked-in output is stale.
#
# buf is installed from npm (@bufbuild/buf) into .ci/.cache on first use.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.ci/.cache/buf"
buf="$cache/node_modules/.bin/buf"

if [[ ! -x "$buf" ]]; then
  echo "installing @bufbuild/buf into $cache" >&2
  mkdir -p "$cache"
  npm install --silent --no-audit --no-fund --prefix "$cache" @bufbuild/buf >&2
fi

cd "$root"
cargo build -q -p protoc-gen-router
"$buf" --version >&2
"$buf" build
"$buf" generate

# Changes to tracked files, then files that are new (not yet committed).
status=0
git diff --exit-code -- examples/myservice/gen || status=1
untracked="$(git ls-files --others --exclude-standard -- examples/myservice/gen)"
if [[ -n "$untracked" ]]; then
  echo "not committed: $untracked" >&2
  status=1
fi
if [[ $status -ne 0 ]]; then
  echo "examples/myservice/gen differs from \`buf generate\`: commit the regenerated files" >&2
  exit 1
fi
echo "buf generate: examples/myservice/gen is up to date" >&2

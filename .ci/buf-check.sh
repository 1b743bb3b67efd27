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

if git ls-files --error-unmatch examples/myservice/gen >/dev/null 2>&1; then
  # Tracked: any change or new file is a failure.
  git add --intent-to-add examples/myservice/gen
  if ! git diff --exit-code -- examples/myservice/gen; then
    echo "examples/myservice/gen is stale: commit the output of \`buf generate\`" >&2
    exit 1
  fi
else
  echo "examples/myservice/gen is not tracked yet: commit it" >&2
  exit 1
fi
echo "buf generate: examples/myservice/gen is up to date" >&2

#!/usr/bin/env bash
# The published crates, as crates.io would receive them:
#
# 1. `cargo publish --dry-run` of grpc-router-runtime, protoc-gen-router and
#    grpc-router in one call. Each is packaged (only the files its `include`
#    names), unpacked and built from the package alone; grpc-router is built
#    against the just-packaged grpc-router-runtime (cargo's local registry overlay),
#    so the check works before anything is on crates.io.
# 2. Each package holds the protos it compiles and no tests or fixtures.
# 3. A new crate outside the workspace, written from the README's quick start,
#    builds against the *packaged* grpc-router-runtime and protoc-gen-router
#    (protoc-gen-router/tests/quick_start.rs with QUICK_START_PACKAGES: one
#    source for the snippets, the README).
#
# Verification builds use the workspace's target dir, so dependencies built
# by earlier CI steps with the same features are reused.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
crates=(grpc-router-runtime protoc-gen-router grpc-router)

started=$SECONDS
step() { echo "==> [publish-check $((SECONDS - started))s] $*" >&2; }

# cargo unpacks the just-packaged crates from its local registry overlay into
# $CARGO_HOME/registry/src/-<hash>/<crate>-<version> and never unpacks the same
# name and version again, and it keys their builds by name and version too,
# so a second run would verify against the first run's code. When an earlier
# run left such copies (the overlay's folders start with "-"; crates.io's
# have the registry's host name), remove them and clean these crates' builds
# (the workspace's own included: they rebuild once). A first run, as in CI,
# has none and cleans nothing.
version="$(cargo pkgid -p grpc-router-runtime | sed 's/.*[@#]//')"
stale=0
for crate in "${crates[@]}"; do
  for copy in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/"$crate-$version"; do
    [[ -e "$copy" ]] || continue
    stale=1
    rm -rf "$copy"
  done
done
if (( stale )); then
  step "an earlier run's packages are unpacked: cleaning their builds"
  cargo clean -q -p grpc-router-runtime -p protoc-gen-router -p grpc-router
fi

# --allow-dirty: CI checks what would be uploaded, not whether earlier steps
# left files in the work tree (the package holds only what `include` names).
step "cargo publish --dry-run ${crates[*]}"
args=()
for crate in "${crates[@]}"; do args+=(-p "$crate"); done
cargo publish --dry-run --allow-dirty --locked "${args[@]}"

step "package contents"
status=0
expect() { # crate, then files its package must hold
  local crate=$1 listing
  shift
  listing="$(cargo package --list --allow-dirty -p "$crate")"
  for file in "$@"; do
    if ! grep -qxF "$file" <<<"$listing"; then
      echo "$crate: the package lacks $file" >&2
      status=1
    fi
  done
  if grep -E '^(tests|benches|examples)/' <<<"$listing" >&2; then
    echo "$crate: the package holds tests or fixtures (above)" >&2
    status=1
  fi
}
expect grpc-router-runtime build.rs proto/router/v1/admin.proto README.md
expect protoc-gen-router proto/router/v1/router.proto proto/router/v1/options.proto README.md
expect grpc-router src/status_page/page.html README.md
[[ $status -eq 0 ]] || exit 1

step "the README's quick start against the packaged crates"
QUICK_START_PACKAGES="$target/package" \
  cargo test -q -p protoc-gen-router --test quick_start -- --test-threads 1

step "published crates: ${crates[*]} $version"

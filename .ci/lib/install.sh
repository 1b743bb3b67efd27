# Sourced by the CI checks that need a tool installed once and kept:
#
#   ensure_buf ROOT        buf from npm (@bufbuild/buf) into ROOT/.ci/.cache/buf
#                          unless it is there; sets `buf` to its path
#   ensure_chromium NAME   Debian's chromium (apt-get, as root) unless a
#                          `chromium` is on the PATH; sets `chromium` to its
#                          path. NAME prefixes the messages.

ensure_buf() {
  local cache="$1/.ci/.cache/buf"
  buf="$cache/node_modules/.bin/buf"
  if [[ ! -x "$buf" ]]; then
    echo "installing @bufbuild/buf into $cache" >&2
    mkdir -p "$cache"
    npm install --silent --no-audit --no-fund --prefix "$cache" @bufbuild/buf >&2
  fi
}

ensure_chromium() {
  local name=$1
  fail() { echo "$name: FAIL: $*" >&2; exit 1; }
  if ! command -v chromium > /dev/null; then
    command -v apt-get > /dev/null || fail "chromium is not installed and there is no apt-get to install it"
    [[ $(id -u) -eq 0 ]] || fail "chromium is not installed; install Debian's chromium (apt-get install chromium) or run as root"
    echo "$name: installing chromium (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq || fail "apt-get update failed"
    timeout 900 apt-get install -y -qq --no-install-recommends chromium > /dev/null || fail "apt-get install chromium failed"
  fi
  chromium="$(command -v chromium)"
}

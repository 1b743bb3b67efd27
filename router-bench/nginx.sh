#!/usr/bin/env bash
# Optional: the unary scenario of router-bench with a third column, an nginx
# `grpc_pass` proxy in front of the direct server, to put the router's cost
# next to that of a well-known L7 gRPC proxy.
#
#   router-bench/nginx.sh                # full unary scenario
#   router-bench/nginx.sh --quick        # any router-bench flags are passed on
#
# nginx comes from Debian: when it is missing, the script installs it with
# apt-get (only as root on a system with apt-get; NGINX_INSTALL=0 forbids it).
# Environment: NGINX_WORKERS (worker processes, default 1), DIRECT_PORT and
# NGINX_PORT (default: the first free port from 50151 and 50161).
set -euo pipefail

cd "$(dirname "$0")/.."

find_nginx() {
    command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

NGINX="$(find_nginx)"
if [ -z "$NGINX" ]; then
    if [ "${NGINX_INSTALL:-1}" = 1 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "nginx.sh: installing nginx from Debian" >&2
        apt-get update -qq >/dev/null
        # The package's postinst may try to start a system nginx on port 80;
        # a failure there does not matter here as long as the binary exists.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null || true
        NGINX="$(find_nginx)"
    fi
fi
if [ -z "$NGINX" ]; then
    echo "nginx.sh: nginx is not installed (apt-get install nginx) - skipping" >&2
    exit 0
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local port=$1
    while port_in_use "$port"; do port=$((port + 1)); done
    echo "$port"
}
DIRECT_PORT="${DIRECT_PORT:-$(free_port 50151)}"
NGINX_PORT="${NGINX_PORT:-$(free_port 50161)}"

# `http2 on;` exists from nginx 1.25.1; older versions take `listen ... http2`.
version="$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')"
if printf '%s\n%s\n' "1.25.1" "$version" | sort -V -C; then
    listen="listen 127.0.0.1:$NGINX_PORT; http2 on;"
else
    listen="listen 127.0.0.1:$NGINX_PORT http2;"
fi

dir="$(mktemp -d)"
cat >"$dir/nginx.conf" <<EOF
worker_processes ${NGINX_WORKERS:-1};
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 100000000;
    upstream direct {
        server 127.0.0.1:$DIRECT_PORT;
        keepalive 256;
        keepalive_requests 100000000;
    }
    server {
        $listen
        location / {
            grpc_pass grpc://direct;
            grpc_read_timeout 120s;
            grpc_send_timeout 120s;
        }
    }
}
EOF

"$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
"$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
nginx_pid=$!
cleanup() {
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

for _ in $(seq 50); do port_in_use "$NGINX_PORT" && break; sleep 0.1; done
echo "nginx.sh: nginx $version (pid $nginx_pid) on 127.0.0.1:$NGINX_PORT -> direct server on 127.0.0.1:$DIRECT_PORT" >&2

cargo build --release -q -p router-bench
target/release/router-bench --scenario unary \
    --direct-listen "127.0.0.1:$DIRECT_PORT" \
    --extra-target "nginx=127.0.0.1:$NGINX_PORT" \
    "$@"

if [ -s "$dir/error.log" ]; then
    echo "nginx.sh: nginx error log:" >&2
    tail -n 20 "$dir/error.log" >&2
fi

//! Well-known L7 gRPC proxies in front of the direct server, for a sense of
//! scale: nginx (`grpc_pass`, one worker process) and HAProxy (`mode http`,
//! HTTP/2 on both sides, one thread). Each runs from a configuration written
//! to a temporary directory, on a free port picked by binding port 0 (neither
//! can report a port it chose itself).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::BoxError;
use crate::process::{Proc, TempDir, free_port};

/// How long a proxy may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A proxy process with its configuration directory.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The process.
    pub proc: Proc,
    /// Its configuration (remove it after the process is killed).
    pub dir: TempDir,
}

/// The version in `nginx -v`'s `nginx version: nginx/1.22.1`.
pub fn nginx_version(text: &str) -> Option<(u32, u32, u32)> {
    let version = text.split("nginx/").nth(1)?.split_whitespace().next()?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()?.unwrap_or(0),
        parts.next().flatten().unwrap_or(0),
    ))
}

/// nginx's HTTP/2 listen directives: `http2 on;` exists from 1.25.1, older
/// versions take `listen ... http2`.
pub fn nginx_listen(version: (u32, u32, u32), addr: SocketAddr) -> String {
    if version >= (1, 25, 1) {
        format!("listen {addr}; http2 on;")
    } else {
        format!("listen {addr} http2;")
    }
}

/// nginx's configuration: one worker, no access log, `grpc_pass` to
/// `upstream` over kept-alive connections (as `router-bench/nginx.sh` has it).
pub fn nginx_config(dir: &Path, listen: &str, upstream: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        "worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    upstream direct {{
        server {upstream};
        keepalive 256;
        keepalive_requests 100000000;
    }}
    server {{
        {listen}
        location / {{
            grpc_pass grpc://direct;
            grpc_read_timeout 120s;
            grpc_send_timeout 120s;
        }}
    }}
}}
"
    )
}

/// HAProxy's configuration: one thread, `mode http`, HTTP/2 (cleartext,
/// prior knowledge) to clients and to the direct server.
pub fn haproxy_config(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout tunnel 120s
frontend grpc
    bind {listen} proto h2
    default_backend direct
backend direct
    server direct {upstream} proto h2
"
    )
}

/// Starts nginx (`exe`) in front of `upstream`.
pub async fn start_nginx(exe: &Path, upstream: SocketAddr) -> Result<Proxy, BoxError> {
    let printed = Command::new(exe)
        .arg("-v")
        .output()
        .map_err(|e| format!("cannot run {} -v: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&printed.stderr);
    let version = nginx_version(&text)
        .ok_or_else(|| format!("cannot read nginx's version from {:?}", text.trim()))?;
    let dir = TempDir::new("nginx")?;
    let addr = free_port()?;
    let config = nginx_config(&dir.path, &nginx_listen(version, addr), upstream);
    let path = dir.write("nginx.conf", config.as_bytes())?;
    let mut command = Command::new(exe);
    command
        .arg("-p")
        .arg(&dir.path)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.path.join("error.log"));
    let mut proc = Proc::spawn("nginx", command)?;
    if let Err(e) = proc.wait_listening(addr, START_TIMEOUT).await {
        let log = std::fs::read_to_string(dir.path.join("error.log")).unwrap_or_default();
        return Err(format!("{e}; nginx error log: {}", log.trim()).into());
    }
    Ok(Proxy { addr, proc, dir })
}

/// Starts HAProxy (`exe`) in front of `upstream`, in the foreground (`-db`:
/// one process, no master).
pub async fn start_haproxy(exe: &Path, upstream: SocketAddr) -> Result<Proxy, BoxError> {
    let dir = TempDir::new("haproxy")?;
    let addr = free_port()?;
    let path = dir.write("haproxy.cfg", haproxy_config(addr, upstream).as_bytes())?;
    let mut command = Command::new(exe);
    command.arg("-db").arg("-f").arg(&path);
    let mut proc = Proc::spawn("haproxy", command)?;
    proc.wait_listening(addr, START_TIMEOUT).await?;
    Ok(Proxy { addr, proc, dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn reads_nginx_versions() {
        assert_eq!(
            nginx_version("nginx version: nginx/1.22.1\n"),
            Some((1, 22, 1))
        );
        assert_eq!(
            nginx_version("nginx version: nginx/1.27.0 (Ubuntu)"),
            Some((1, 27, 0))
        );
        assert_eq!(nginx_version("nginx version: openresty"), None);
    }

    #[test]
    fn the_listen_directive_follows_the_version() {
        let a = addr("127.0.0.1:8080");
        assert_eq!(nginx_listen((1, 22, 1), a), "listen 127.0.0.1:8080 http2;");
        assert_eq!(
            nginx_listen((1, 25, 1), a),
            "listen 127.0.0.1:8080; http2 on;"
        );
    }

    #[test]
    fn nginx_has_one_worker_and_passes_grpc_upstream() {
        let text = nginx_config(
            Path::new("/tmp/x"),
            "listen 127.0.0.1:1 http2;",
            addr("127.0.0.1:2"),
        );
        assert!(text.contains("worker_processes 1;"));
        assert!(text.contains("server 127.0.0.1:2;"));
        assert!(text.contains("grpc_pass grpc://direct;"));
        assert!(text.contains("pid /tmp/x/nginx.pid;"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn haproxy_speaks_h2_on_both_sides_with_one_thread() {
        let text = haproxy_config(addr("127.0.0.1:1"), addr("127.0.0.1:2"));
        assert!(text.contains("nbthread 1"));
        assert!(text.contains("mode http"));
        assert!(text.contains("bind 127.0.0.1:1 proto h2"));
        assert!(text.contains("server direct 127.0.0.1:2 proto h2"));
    }
}

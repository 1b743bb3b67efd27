# Container image of the grpc-router daemon (crate `grpc-router`, grpc-router/).
#
#   docker build -t grpc-router:0.1.0 .
#   docker run --rm -p 50051:50051 -p 50052:50052 grpc-router:0.1.0
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.
# See deploy/README.md for running it, the Helm chart and the plain manifests.

# ---- build -------------------------------------------------------------------
# The full (not slim) image: ring (TLS) and jemalloc build C code with the gcc
# and make it has. Bookworm on purpose: the binary links against glibc, and the
# runtime image below is Debian 12 too, so its glibc is the one built against
# (the unqualified `rust:1` tag follows newer Debian releases).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target dirs are BuildKit caches, so a rebuild after a source
# change compiles only what changed; the binary is copied out of the cached
# target dir in the same step. --locked: build exactly what Cargo.lock pins.
# The image exports traces ([tracing] otlp_endpoint): the otel feature is on.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p grpc-router --locked \
 && install -D -m 0755 target/release/grpc-router /out/grpc-router

# ---- runtime -----------------------------------------------------------------
# Distroless "cc": glibc, libgcc_s and CA certificates, which is all a Rust
# binary needs; no shell, no package manager, nothing else to patch. The
# :nonroot variant runs as uid/gid 65532 out of the box. (debian:bookworm-slim
# with a created user would also work, at ~3x the size and with a shell and apt
# to keep patched; the one thing lost here is a shell to debug in: use the
# :debug-nonroot tag of the same image, or `kubectl debug`.)
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/grpc-router /usr/local/bin/grpc-router
# The default configuration; the Helm chart mounts its own over it, and with
# docker a different one can be mounted (-v ./router.toml:/etc/grpc-router/router.toml:ro)
# or single settings set with GRPC_ROUTER_<SECTION>__<KEY> variables.
COPY deploy/router.toml /etc/grpc-router/router.toml

# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532

# 50051: clients (plain HTTP/2 gRPC unless [clients.tls]; grpc.health.v1 too).
# 50052: registrations from service instances (bridges); firewall it apart.
EXPOSE 50051 50052 9090

# SIGTERM (the default stop signal) starts a graceful shutdown: stop accepting,
# let calls in flight finish within [shutdown] grace (30 s by default), then
# send instances GoAway. `docker stop` waits only 10 s before SIGKILL: use
# `docker stop -t 40` (compose: stop_grace_period: 40s). SIGHUP reloads the
# configuration file (`docker kill -s HUP <container>`).
STOPSIGNAL SIGTERM

# Health probes. The daemon serves grpc.health.v1.Health on the clients port;
# service "" is SERVING while it runs and is not shutting down.
# - Kubernetes: native probes, `grpc: {port: 50051}` (Kubernetes >= 1.27; the
#   Helm chart sets them). They speak plaintext only: with [clients.tls] use a
#   tcpSocket probe (the chart switches to one) or grpc_health_probe -tls.
# - Docker: a HEALTHCHECK needs a client program inside the image, and this
#   one has no shell and no curl; none is declared. To have one, add the
#   static grpc_health_probe binary (a release asset of
#   github.com/grpc-ecosystem/grpc-health-probe) and a HEALTHCHECK in exec
#   form, since there is no shell:
#     ADD --chmod=0755 https://github.com/grpc-ecosystem/grpc-health-probe/releases/download/v0.4.42/grpc_health_probe-linux-amd64 /usr/local/bin/grpc_health_probe
#     HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/grpc_health_probe", "-addr=127.0.0.1:50051"]
#   or probe from outside: grpcurl -plaintext HOST:50051 grpc.health.v1.Health/Check

ENTRYPOINT ["/usr/local/bin/grpc-router"]
CMD ["serve", "--config", "/etc/grpc-router/router.toml"]

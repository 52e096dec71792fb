# syntax=docker/dockerfile:1.20
#
# Fulcrum container image (BuildKit required: cache mounts, COPY --parents).
#
#   docker build -t fulcrum .                        # the runtime image (last stage, the default)
#   docker build --target demo -t fulcrum-demo .     # + the gRPC echo example (compose demo)
#
# Fulcrum is a Cargo workspace: the root package `fulcrum` (src/) and the layer crates
# (crates/*, the `fulcrum-*` packages). Stages:
#   deps          dependencies only: a manifest-only build over stub sources. Its inputs are
#                 Cargo.toml, every crates/*/Cargo.toml, Cargo.lock, rust-toolchain.toml,
#                 .cargo/config.toml and the stub script, so editing a source file never
#                 recompiles the dependencies.
#   builder       the real sources (src/, crates/) on top of deps: compiles only Fulcrum's own
#                 crates, fulcrum and fulcrum-*.
#   demo-deps     + the dev-dependencies of examples/grpc_echo.rs (tonic), demo image only.
#   demo-builder  the grpc_echo example.
#   base          debian bookworm-slim with ca-certificates and the non-root user (uid 10001).
#   demo          base + fulcrum + grpc_echo: the compose stack's demo backends.
#   runtime       base + fulcrum, HEALTHCHECK, EXPOSE 8080 9090 8443 (the default target).
#
# Cache mounts: the cargo registry and git checkouts are mounted in every cargo step (a changed
# Cargo.lock downloads only the new crates). In `deps` the target directory is a cache mount too
# and is then copied into the layer: locally a changed Cargo.lock recompiles only the changed
# crates (the mount keeps the rest), and the layer itself still holds the compiled dependencies,
# which is what a CI runner with a fresh Docker daemon gets back from the registry cache
# (`--cache-from`, see .gitlab-ci.yml); cache mounts never leave the builder that made them.
#
# The stub crates' artifacts are deleted after each dependency build (the `fulcrum-*`
# fingerprints, the `fulcrum[-_]*` and `libfulcrum[-_]*` files), so the real build cannot take a
# stub for up to date, whatever the copied sources' mtimes. .ci/docker-stages emulates these
# stages without Docker (docs/deploy.md).

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ------------------------------------------------------------------------------------- deps --
FROM ${RUST_IMAGE} AS deps
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
WORKDIR /build
COPY --chmod=0755 deploy/stub-sources.sh /usr/local/bin/stub-sources
# jemalloc (the global allocator) builds with make, which the slim image lacks. aws-lc-sys
# (rustls' crypto provider) builds its C and assembly with the `cc` crate: the gcc and
# libc6-dev that the rust slim image already has are enough (no cmake, no clang).
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY .cargo ./.cargo
# Every member's manifest at its own path (crates/NAME/Cargo.toml), nothing else of crates/.
COPY --parents crates/*/Cargo.toml ./
# Stub sources for every target of every workspace member, compile the dependencies, then
# forget the stub crates (their fingerprints and artifacts).
RUN --mount=type=cache,id=fulcrum-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=fulcrum-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=fulcrum-target-deps,target=/cache/target,sharing=locked \
    stub-sources \
    && cargo build --release --locked --bin fulcrum --target-dir /cache/target \
    && rm -rf /cache/target/release/.fingerprint/fulcrum-* /cache/target/release/build/fulcrum-* \
        /cache/target/release/deps/fulcrum[-_]* /cache/target/release/deps/libfulcrum[-_]* \
        /cache/target/release/fulcrum* /cache/target/release/libfulcrum* \
    && cp -a /cache/target /build/target

# ---------------------------------------------------------------------------------- builder --
FROM deps AS builder
# The real sources replace the stubs (the root's bench stubs stay: benches are not built).
COPY src ./src
COPY crates ./crates
RUN --mount=type=cache,id=fulcrum-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=fulcrum-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked --bin fulcrum \
    && install -D -m 0755 target/release/fulcrum /out/fulcrum

# -------------------------------------------------------------------------------- demo-deps --
FROM deps AS demo-deps
# grpc_echo is an auto-discovered example (not in Cargo.toml): its stub is written here.
RUN --mount=type=cache,id=fulcrum-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=fulcrum-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    mkdir -p examples \
    && printf '//! Dependency-cache stub.\nfn main() {}\n' >examples/grpc_echo.rs \
    && cargo build --release --locked --example grpc_echo \
    && rm -rf target/release/.fingerprint/fulcrum-* target/release/build/fulcrum-* \
        target/release/deps/fulcrum[-_]* target/release/deps/libfulcrum[-_]* \
        target/release/examples/grpc_echo*

# ----------------------------------------------------------------------------- demo-builder --
FROM demo-deps AS demo-builder
COPY src ./src
COPY crates ./crates
COPY examples ./examples
COPY tests/it/harness/echo.rs ./tests/it/harness/echo.rs
RUN --mount=type=cache,id=fulcrum-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=fulcrum-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked --example grpc_echo \
    && install -D -m 0755 target/release/examples/grpc_echo /out/grpc_echo

# ------------------------------------------------------------------------------------- base --
FROM ${RUNTIME_IMAGE} AS base
# ca-certificates: the system trust store (/etc/ssl/certs) that https:// and h2:// backends'
# certificates are checked against when [upstream_tls] names no ca_file (rustls-native-certs);
# without it Fulcrum refuses such a configuration at start. Nothing else is installed: the
# HEALTHCHECK uses `fulcrum healthcheck`, not curl.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20250419~deb12u2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fulcrum \
    && useradd --system --uid 10001 --gid fulcrum --home-dir /var/lib/fulcrum --no-create-home \
        --shell /usr/sbin/nologin fulcrum \
    && install -d -o fulcrum -g fulcrum -m 0750 /var/lib/fulcrum \
    && install -d -m 0755 /etc/fulcrum
WORKDIR /var/lib/fulcrum

# ------------------------------------------------------------------------------------- demo --
FROM base AS demo
COPY --from=builder /out/fulcrum /usr/local/bin/fulcrum
COPY --from=demo-builder /out/grpc_echo /usr/local/bin/grpc_echo
USER 10001:10001
EXPOSE 8080 50051
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["fulcrum", "healthcheck", "--url", "http://127.0.0.1:8080/"]
CMD ["fulcrum", "demo-backend", "--listen", "0.0.0.0:8080"]

# ---------------------------------------------------------------------------------- runtime --
FROM base AS runtime
LABEL org.opencontainers.image.title="fulcrum" \
      org.opencontainers.image.description="Thread-per-core L7 (HTTP/1.1, gRPC) load balancer on io_uring" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/fulcrum /usr/local/bin/fulcrum
# Non-root. The configuration is mounted read-only at /etc/fulcrum/fulcrum.toml (it must set
# `listen = "0.0.0.0:8080"` and `admin_listen = "0.0.0.0:9090"` to be reachable from outside the
# container; deploy/fulcrum.toml does). The JWT secret comes from FULCRUM_JWT_SECRET at run
# time and is never part of the image. /var/lib/fulcrum is writable for `state_file`.
# Certificates and keys for [tls] (and admin.tls_*) are mounted too, never built in: by
# convention at /etc/fulcrum/tls/, readable by uid 10001 (docs/deploy.md).
USER 10001:10001
# 8080: data plane (HTTP/1.1 and h2c); 9090: admin API (/healthz, /readyz, /api/v1/*);
# 8443: the TLS listener, when the configuration sets [tls] listen = "0.0.0.0:8443".
EXPOSE 8080 9090 8443
# /healthz is served by the admin listener, which is on only when a JWT key is configured
# (FULCRUM_JWT_SECRET); with another admin port, override the HEALTHCHECK or its --url. The
# probe speaks plain HTTP: with the admin API over HTTPS (admin.tls_cert_file), override it
# with `--url tcp://127.0.0.1:9090` (connect only).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["fulcrum", "healthcheck", "--url", "http://127.0.0.1:9090/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["fulcrum"]
CMD ["--config", "/etc/fulcrum/fulcrum.toml"]

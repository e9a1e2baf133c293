# syntax=docker/dockerfile:1
# authchat: multi-stage build. Dependencies are compiled in their own cached layer, so a code
# change rebuilds only the crate itself. The runtime image is Debian slim, runs as a non-root
# user, and starts in production mode (config/production.toml: TLS on, no dev users, Origin
# allowlist required). scripts/container-smoke.sh reproduces this runtime layout without Docker.

FROM rust:1-bookworm AS build
WORKDIR /src
# 1. Dependencies only: a stub crate with the real manifest and lock file. The workspace's
#    other member, the load tool (bench/), is only a manifest with stub targets here, so Cargo can
#    read the workspace; `-p authchat` builds the server alone.
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml ./bench/
RUN mkdir -p src config bench/src bench/peers/actix \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs config/default.toml bench/src/lib.rs \
 && echo 'fn main() {}' > bench/src/main.rs && echo 'fn main() {}' > bench/peers/actix/main.rs \
 && cargo build --release --locked -p authchat \
 && rm -rf src config target/release/authchat* target/release/deps/authchat* target/release/deps/libauthchat* \
           target/release/.fingerprint/authchat*
# 2. The crate (config/default.toml is compiled in).
COPY src ./src
COPY config ./config
RUN cargo build --release --locked -p authchat --bin authchat && strip target/release/authchat

# No packages: the one outbound TLS (an identity provider's keys, auth.jwks_url) trusts the
# Mozilla roots compiled into the binary (reqwest's rustls-tls) or auth.jwks_ca_file, and the
# binary checks its own health.
FROM debian:bookworm-slim AS runtime
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin authchat
WORKDIR /app
COPY --from=build /src/target/release/authchat /usr/local/bin/authchat
COPY config ./config
COPY static ./static
ENV AUTHCHAT_ENV=production \
    AUTHCHAT_CONFIG_DIR=/app/config
USER authchat
# HTTPS and wss:// (config/production.toml). Mount the certificate and key at /etc/authchat/tls/.
EXPOSE 8443
# GET /healthz where the configuration says the server listens (https with tls.cert, trusting
# exactly that certificate); the same environment as the server, so port overrides apply.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["authchat", "healthcheck"]
ENTRYPOINT ["authchat"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# iiot-gateway container: a release build in the Rust image, then the binary alone on Debian
# slim, run as an unprivileged user. Used by deploy/docker-compose.yml (see README "Compose
# stack"); standalone:
#   docker build -t iiot-gateway .
#   docker run -p 8080:8080 -v $PWD/config.toml:/etc/iiot-gateway/config.toml:ro iiot-gateway
#
# The builder is the bookworm variant of rust:1-slim so the binary links against the glibc of
# the runtime image (plain rust:1-slim follows Debian's newest release).

FROM rust:1-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin iiot-gateway \
    && install -m 0755 target/release/iiot-gateway /usr/local/bin/iiot-gateway

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin iiot \
    && install -d -o iiot -g iiot -m 0750 /var/lib/iiot-gateway \
    && install -d -m 0755 /etc/iiot-gateway
COPY --from=builder /usr/local/bin/iiot-gateway /usr/local/bin/iiot-gateway
USER iiot
WORKDIR /var/lib/iiot-gateway
# Outbox, history and quarantine ([storage] dir in deploy/gateway/config.toml).
VOLUME ["/var/lib/iiot-gateway"]
# Dashboard, /api and /healthz ([http] listen = "0.0.0.0:8080").
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/iiot-gateway"]
CMD ["--config", "/etc/iiot-gateway/config.toml"]

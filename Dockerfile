# hermes-init base image: /init as PID 1, the boot hooks, hermes-cont-init and hermesctl.
# An application image adds its gateway on top (see docs/deploy.md).

FROM rust:1-slim-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bins

FROM debian:bookworm-slim
# hermes runs the gateways and owns the volume; hermes-admin may use the control socket
# (the gateways are not in it: add an operator's user to it to grant hermesctl).
RUN groupadd -g 10000 hermes \
 && useradd -u 10000 -g hermes -d /opt/data -M -s /usr/sbin/nologin hermes \
 && groupadd -g 10001 hermes-admin \
 && mkdir -p /opt/data \
 && chown hermes:hermes /opt/data
COPY rootfs/ /
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/hermes-reaper /init
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/hermes-cont-init \
                  /src/target/x86_64-unknown-linux-musl/release/hermesctl /usr/local/bin/
ENV HERMES_HOME=/opt/data \
    HERMES_INIT_ADMIN_GROUP=hermes-admin \
    HERMES_INIT_HOOK_TIMEOUT_MS=120000
VOLUME /opt/data
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["hermesctl", "health", "--level", "ready"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/init"]

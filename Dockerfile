# syntax=docker/dockerfile:1
# DeepSentry container image: a release build on a slim Debian runtime, running as the
# unprivileged user `deepsentry`, with the shipped model, pipelines and live-monitoring files.
#
#   docker build -t deepsentry .
#   docker run --rm -p 8686:8686 deepsentry                       # the built-in demo pipeline
#   docker run --rm -v "$PWD/my.yml:/etc/deepsentry/pipelines/my.yml:ro" \
#       deepsentry -c /etc/deepsentry/pipelines/my.yml
#   docker run -d --name deepsentry-live -v /var/log:/var/log:ro -e LOG_FILE=/var/log/app.log \
#       --entrypoint deepsentry deepsentry live -c /etc/deepsentry/live_monitoring_config.yml
#
# The entrypoint is `deepsentry run`; its arguments follow the image name. The API listens on
# 0.0.0.0:8686 (GET /health, GET /metrics), and the health check asks it. File checkpoints
# live in the volume /var/lib/deepsentry.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and build outputs between image builds; the binary is
# copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p deepsentry \
    && install -D -m 0755 target/release/deepsentry /out/deepsentry

FROM debian:bookworm-slim
# ca-certificates and libssl3 (Kafka over TLS) are left unpinned on purpose: an image rebuild
# should pick up new CA roots and OpenSSL fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 999 deepsentry \
    && useradd --system --uid 999 --gid deepsentry --home-dir /var/lib/deepsentry \
        --no-create-home --shell /usr/sbin/nologin deepsentry \
    && mkdir -p /var/lib/deepsentry /etc/deepsentry/pipelines /opt/deepsentry \
    && chown deepsentry:deepsentry /var/lib/deepsentry
COPY --from=builder /out/deepsentry /usr/local/bin/deepsentry
COPY pipelines/ /etc/deepsentry/pipelines/
COPY live_monitoring_config.yml /etc/deepsentry/live_monitoring_config.yml
COPY dockerrun/ /opt/deepsentry/dockerrun/
COPY models/ /usr/share/deepsentry/models/
# The pipelines and the live config read the model, the API address and the state directory
# from these.
ENV ANOMALY_MODEL=/usr/share/deepsentry/models/default \
    DEEPSENTRY_API_ADDRESS=0.0.0.0:8686 \
    DEEPSENTRY_DATA_DIR=/var/lib/deepsentry \
    DEEPSENTRY_HOME=/usr/share/deepsentry \
    LIVE_MONITORING_CONFIG=/etc/deepsentry/live_monitoring_config.yml
# The user `deepsentry`, by number so that Kubernetes' runAsNonRoot can check it.
USER 999:999
WORKDIR /var/lib/deepsentry
VOLUME ["/var/lib/deepsentry"]
EXPOSE 8686
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["deepsentry", "health"]
ENTRYPOINT ["deepsentry", "run"]
CMD []

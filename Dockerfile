# syntax=docker/dockerfile:1
# DeepSentry container image.
#
#   docker build -t deepsentry .
#   docker run --rm deepsentry                                   # the built-in demo pipeline
#   docker run --rm -v "$PWD/my.yml:/etc/deepsentry/pipelines/my.yml:ro" \
#       deepsentry run -c /etc/deepsentry/pipelines/my.yml
#
# The working directory is /var/lib/deepsentry (a volume), so the default `data_dir`
# (`.deepsentry`, relative to the working directory) keeps file checkpoints on the volume.

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
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system deepsentry \
    && useradd --system --gid deepsentry --home-dir /var/lib/deepsentry --no-create-home \
        --shell /usr/sbin/nologin deepsentry \
    && mkdir -p /var/lib/deepsentry /etc/deepsentry/pipelines \
    && chown deepsentry:deepsentry /var/lib/deepsentry
COPY --from=builder /out/deepsentry /usr/local/bin/deepsentry
COPY pipelines/ /etc/deepsentry/pipelines/
COPY models/ /usr/share/deepsentry/models/
# The default pipeline reads its model from here (`model: ${ANOMALY_MODEL:-models/default}`).
ENV ANOMALY_MODEL=/usr/share/deepsentry/models/default
USER deepsentry
WORKDIR /var/lib/deepsentry
VOLUME ["/var/lib/deepsentry"]
ENTRYPOINT ["deepsentry"]
CMD ["run"]

# syntax=docker/dockerfile:1
#
# The Taskline worker image: the `taskline-worker` and `taskline` binaries
# on a small Debian runtime, run as a non-root user.
#
#   docker build -t taskline .
#   docker compose up --scale worker=3      # see docker-compose.yml
#
# Stage 1 builds with the toolchain and the lock file CI uses (`--locked`,
# as in .ci/run); stage 2 holds only the binaries, CA certificates for
# https:// endpoints, and the example configuration.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target/ are BuildKit caches, kept between builds; the
# binaries are copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/taskline-worker target/release/taskline /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin taskline
COPY --from=builder /out/taskline-worker /out/taskline /usr/local/bin/
COPY config/worker.toml /app/config/worker.toml
WORKDIR /app
USER taskline:taskline
ENV TASKLINE_CONFIG=/app/config/worker.toml
# /metrics, /healthz and /readyz, when worker.metrics_addr is set.
EXPOSE 9464
# The worker drains on SIGTERM: running jobs get worker.shutdown_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["taskline-worker"]
CMD ["--config", "/app/config/worker.toml"]

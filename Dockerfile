# syntax=docker/dockerfile:1
#
# mxcd container image.
#
#   docker build -t mxcd .
#   docker run --rm -p 127.0.0.1:8090:8090 \
#       -e MXCD__SERVER_NAME=example.org \
#       -e MXCD__HOMESERVER__URL=https://matrix.example.org \
#       -e MXCD__DATABASE__URL=postgres://mxcd:secret@db:5432/mxcd \
#       mxcd
#
# Configuration comes from `--config FILE` (e.g. a mounted TOML file) and/or
# MXCD__SECTION__KEY environment variables; see docker-compose.yml for a
# complete PostgreSQL + S3 setup. Without any, it uses SQLite and the
# filesystem under /var/lib/mxcd/data (mount a volume there to keep them).

# ---- build stage ------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
# nasm assembles dav1d's SIMD code (AVIF decoding); the image has the C compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nasm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between
# builds (BuildKit, the default builder of current Docker). The target dir is
# a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked \
    && cp target/release/mxcd /usr/local/bin/mxcd

# ---- runtime stage ----------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to the homeserver and to S3 (rustls uses the system roots).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system mxcd \
    && useradd --system --gid mxcd --home-dir /var/lib/mxcd --shell /usr/sbin/nologin mxcd \
    && mkdir -p /var/lib/mxcd/data \
    && chown -R mxcd:mxcd /var/lib/mxcd
COPY --from=builder /usr/local/bin/mxcd /usr/local/bin/mxcd

USER mxcd
WORKDIR /var/lib/mxcd
# Listen on all interfaces inside the container (the built-in default is
# 127.0.0.1:8090, which would be unreachable from outside).
ENV MXCD__HTTP__BIND=0.0.0.0:8090
EXPOSE 8090
ENTRYPOINT ["mxcd"]
CMD ["serve"]

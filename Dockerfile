# syntax=docker/dockerfile:1
#
# redis-dsg container image.
#
#   docker build -t ghcr.io/redis-dsg/redis-dsg:0.1.0 .
#
# The builder runs Debian bookworm, the release the runtime image
# (distroless cc-debian12) is built from, so the binary links against the same
# glibc it runs with. Checked by tests/packaging/run (hadolint and structure).

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src

# Dependencies first: this layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The crate itself. Touch the sources so cargo rebuilds them over the stub
# (COPY keeps the context's timestamps, which may be older than the stub's).
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && cp target/release/redis-dsg /usr/local/bin/redis-dsg

FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="redis-dsg" \
      org.opencontainers.image.description="Distributed message generator and consumer for Redis: one fenced generator, reliable consumers, built for Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/redis-dsg/redis-dsg" \
      org.opencontainers.image.url="https://github.com/redis-dsg/redis-dsg" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /usr/local/bin/redis-dsg /usr/local/bin/redis-dsg

# distroless's "nonroot" user; the Helm chart runs it read-only with every
# capability dropped.
USER 65532:65532
# HTTP: /healthz, /readyz, /metrics, /status (MPORT / http.port).
EXPOSE 8080

ENTRYPOINT ["/usr/local/bin/redis-dsg"]
CMD ["run"]

# syntax=docker/dockerfile:1
#
# redis-dsg container image: one stripped binary, the product (crate
# crates/redis-dsg); the development tools (crates/dsg-dev) and the test
# support (crates/dsg-testkit) are never built here.
#
#   docker build -t ghcr.io/redis-dsg/redis-dsg:0.1.0 .
#
# The builder runs Debian bookworm, the release the runtime image
# (distroless cc-debian12) is built from, so the binary links against the same
# glibc it runs with. Checked by tests/packaging/run (hadolint, structure, and
# the same build steps run outside Docker).

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src

# Dependencies first: this layer is rebuilt only when a manifest or
# Cargo.lock changes, not on every source edit. Cargo loads every workspace
# member, so the other crates get empty stand-ins; only the product is built.
COPY Cargo.toml Cargo.lock ./
COPY crates/redis-dsg/Cargo.toml crates/redis-dsg/
COPY crates/dsg-testkit/Cargo.toml crates/dsg-testkit/
COPY crates/dsg-dev/Cargo.toml crates/dsg-dev/
RUN mkdir -p crates/redis-dsg/src crates/dsg-testkit/src crates/dsg-dev/src \
    && echo 'fn main() {}' > crates/redis-dsg/src/main.rs \
    && touch crates/redis-dsg/src/lib.rs crates/dsg-testkit/src/lib.rs \
    && echo 'fn main() {}' > crates/dsg-dev/src/main.rs \
    && cargo build --profile dist --locked -p redis-dsg --bin redis-dsg \
    && rm -rf crates/redis-dsg/src

# The product itself, built with the `dist` profile (release, stripped: no
# debug info in the image). Touch the sources so cargo rebuilds them over the
# stand-in (COPY keeps the context's timestamps, which may be older).
COPY crates/redis-dsg/src crates/redis-dsg/src
RUN find crates/redis-dsg/src -name '*.rs' -exec touch {} + \
    && cargo build --profile dist --locked -p redis-dsg --bin redis-dsg \
    && cp target/dist/redis-dsg /usr/local/bin/redis-dsg

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

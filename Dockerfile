# syntax=docker/dockerfile:1
#
# The gateway and operator images, from one build of static (musl) release binaries:
#
#   docker build --target gateway  -t understudy-gateway  .
#   docker build --target operator -t understudy-operator .
#
# The Rust target follows BuildKit's TARGETARCH: amd64 (x86_64-unknown-linux-musl) or arm64
# (aarch64-unknown-linux-musl), e.g. `docker buildx build --platform linux/arm64 ...`.
# Both final images are distroless (no shell, no package manager) and run as 65532:65532.

FROM rust:1.95-bookworm AS builder
ARG TARGETARCH
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH '$TARGETARCH': build with BuildKit for amd64 or arm64" >&2; exit 1 ;; \
    esac > /rust-target \
    && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
# The cache mounts keep the crates.io index, sources and build artefacts between builds (Cargo
# keeps each target triple apart); the binaries are copied out of the target cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    TRIPLE=$(cat /rust-target) \
    && cargo build --release --locked --target "$TRIPLE" \
        -p understudy-gateway -p understudy-operator \
    && mkdir -p /out \
    && cp "target/$TRIPLE/release/understudy-gateway" \
          "target/$TRIPLE/release/understudy-operator" /out/

FROM gcr.io/distroless/static-debian12:nonroot AS gateway
COPY --from=builder /out/understudy-gateway /usr/local/bin/understudy-gateway
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/understudy-gateway"]

FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=builder /out/understudy-operator /usr/local/bin/understudy-operator
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/understudy-operator"]

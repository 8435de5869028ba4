# syntax=docker/dockerfile:1
#
# The gateway and operator images, from one build of static (musl) release binaries:
#
#   docker build --target gateway  -t understudy-gateway  .
#   docker build --target operator -t understudy-operator .
#
# Both final images are distroless (no shell, no package manager) and run as 65532:65532.

FROM rust:1.95-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The cache mounts keep the crates.io index, sources and build artefacts between builds; the
# binaries are copied out of the target cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
        -p understudy-gateway -p understudy-operator \
    && mkdir -p /out \
    && cp target/x86_64-unknown-linux-musl/release/understudy-gateway \
          target/x86_64-unknown-linux-musl/release/understudy-operator /out/

FROM gcr.io/distroless/static-debian12:nonroot AS gateway
COPY --from=builder /out/understudy-gateway /usr/local/bin/understudy-gateway
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/understudy-gateway"]

FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=builder /out/understudy-operator /usr/local/bin/understudy-operator
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/understudy-operator"]

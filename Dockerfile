# syntax=docker/dockerfile:1
# The worker image, for linux/amd64 (scripts/push-worker-image.sh builds and pushes it).
#
# Fargate pulls the whole image at every task start, so its size is start-up time: the final
# stage is distroless (glibc, libgcc, CA certificates, a nonroot user; no shell, no package
# manager) with the stripped release binary alone. The CA certificates are needed: the AWS SDK's
# HTTPS client (rustls) trusts the system's roots (rustls-native-certs), not a bundled list.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep crates and build output between builds on the same machine; the binary
# is copied out of the target cache within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package worker \
    && cp target/release/worker /usr/local/bin/worker

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/worker /usr/local/bin/worker
# nonroot (65532); the task definition also makes the root filesystem read-only.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/worker"]

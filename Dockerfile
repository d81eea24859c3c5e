# The worker image: build the release binary, ship it alone on a slim base.
# Fargate pulls the whole image at every task start, so the final stage holds only the binary and
# the CA certificates it needs to reach S3 and SQS over TLS.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --package worker

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/worker /usr/local/bin/worker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/worker"]

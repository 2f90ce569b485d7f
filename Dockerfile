# Multi-stage build of the operator image. Untested in this project's environment (no Docker
# engine there); the binary it builds is the one `make test` tests.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin consumer-group-operator

# Slim Debian: librdkafka links the system OpenSSL (libssl3). Runs as non-root 65532.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin operator
COPY --from=build /src/target/release/consumer-group-operator /usr/local/bin/consumer-group-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/consumer-group-operator"]
CMD ["run"]

# One image for every role: serve, the copy Jobs (sync-image) and the
# refresh-secrets CronJob. Non-root, CA certificates included (every TLS
# client here reads the OS trust store).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
RUN cargo build --release --locked && strip target/release/privatize

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/privatize /usr/local/bin/privatize
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/privatize"]
CMD ["--help"]

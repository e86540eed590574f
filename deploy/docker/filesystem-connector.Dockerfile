# filesystem-connector. Build from the repository root:
#   docker build -f deploy/docker/filesystem-connector.Dockerfile -t filesystem-connector .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p filesystem-connector --bin filesystem-connector

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/connector dsx \
 && install -d -o 10001 -g 10001 /var/lib/connector
COPY --from=build /src/target/release/filesystem-connector /usr/local/bin/filesystem-connector
USER 10001
# The uuid survives restarts when this is a volume; no credential is ever written here.
ENV DSXCONNECTOR_DATA_DIR=/var/lib/connector
EXPOSE 8620
ENTRYPOINT ["filesystem-connector"]
CMD ["--listen", "0.0.0.0:8620"]

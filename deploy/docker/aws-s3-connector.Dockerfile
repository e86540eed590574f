# aws-s3-connector (the `s3-connector` binary). Build from the repository root:
#   docker build -f deploy/docker/aws-s3-connector.Dockerfile -t aws-s3-connector .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p s3-connector --bin s3-connector

FROM debian:bookworm-slim
# ca-certificates: the AWS endpoints' roots (rustls reads the platform store).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/connector dsx \
 && install -d -o 10001 -g 10001 /var/lib/connector
COPY --from=build /src/target/release/s3-connector /usr/local/bin/s3-connector
USER 10001
# The uuid survives restarts when this is a volume; no credential is ever written here.
ENV DSXCONNECTOR_DATA_DIR=/var/lib/connector
EXPOSE 8600
ENTRYPOINT ["s3-connector"]
CMD ["--listen", "0.0.0.0:8600"]

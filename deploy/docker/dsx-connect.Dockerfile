# dsx-connect: API, workers and the built-in scanner in one binary.
# Build from the repository root: docker build -f deploy/docker/dsx-connect.Dockerfile -t dsx-connect .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dsx-connect-cli --bin dsx-connect

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/dsx-connect dsx \
 && install -d -o 10001 -g 10001 /var/lib/dsx-connect
COPY --from=build /src/target/release/dsx-connect /usr/local/bin/dsx-connect
USER 10001
ENV DSXCONNECT_DATA_DIR=/var/lib/dsx-connect
EXPOSE 8586
ENTRYPOINT ["dsx-connect"]
CMD ["serve", "--listen", "0.0.0.0:8586"]

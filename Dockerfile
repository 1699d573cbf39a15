# Multi-stage build of the confmesh agent.
#   docker build -t confmesh .
#   docker run --rm -p 7947:7947 confmesh agent --dev --http-addr 0.0.0.0:7947 ...
# (a non-loopback HTTP address needs api_token, and http_tls outside --dev; see
# confmesh.example.toml)
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin confmesh --features mimalloc

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/confmesh --create-home confmesh
COPY --from=build /src/target/release/confmesh /usr/local/bin/confmesh
USER confmesh
WORKDIR /var/lib/confmesh
# 7946/udp: QUIC between nodes; 7947/tcp: the HTTP API.
EXPOSE 7946/udp 7947/tcp
VOLUME ["/var/lib/confmesh"]
ENTRYPOINT ["/usr/local/bin/confmesh"]
CMD ["agent", "--config", "/etc/confmesh/confmesh.toml"]

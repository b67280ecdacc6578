# A small image with the `stencil` binary, for the intake (the default command) or the agent.
#   docker build -t stencil .
#   docker run -p 10600:10600 -e STENCIL_INTAKE_API_KEY_FILE=/run/secrets/keys stencil
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stencil \
    && strip target/release/stencil

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/stencil --create-home stencil
COPY --from=build /src/target/release/stencil /usr/local/bin/stencil
USER stencil
WORKDIR /var/lib/stencil
# gRPC intake, and metrics / health / readiness.
EXPOSE 10600 9100
ENV STENCIL_INTAKE_LISTEN=0.0.0.0:10600 \
    STENCIL_INTAKE_METRICS_LISTEN=0.0.0.0:9100
ENTRYPOINT ["stencil"]
CMD ["intake", "--jsonl", "/var/lib/stencil/logs.jsonl"]

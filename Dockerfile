# Builds the Lucius binaries and runs lucius-orchestrator by default.
#   docker build -t lucius:local .
#   docker run --rm -p 8000:8000 lucius:local
#   docker run --rm lucius:local lucius-reconciliation loop --partition t1#202401 --interval 5
# The build runs the same cargo command CI builds with (cargo build --release -p lucius-bin).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p lucius-bin

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 lucius
COPY --from=build /src/target/release/lucius /src/target/release/lucius-orchestrator \
    /src/target/release/lucius-reconciliation /usr/local/bin/
USER lucius
ENV LUCIUS_STORAGE_BACKEND=memory LUCIUS_HTTP_ADDR=0.0.0.0:8000
EXPOSE 8000
CMD ["lucius-orchestrator"]

# Breakwater. Untested here (no Docker engine on the project's machines); see README.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p breakwater

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/breakwater /usr/local/bin/breakwater
COPY deploy/breakwater.toml /etc/breakwater/breakwater.toml
VOLUME /var/lib/breakwater
EXPOSE 9464
ENTRYPOINT ["breakwater"]
CMD ["run", "--config", "/etc/breakwater/breakwater.toml"]

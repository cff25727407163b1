# Breakwater. Never built here (no Docker engine on the project's machines); see README.
#
# Dependencies are cooked by cargo-chef in a layer of their own, keyed on the manifests and
# Cargo.lock only: a change to Breakwater's source rebuilds Breakwater, not RocksDB and
# librdkafka (about 20 minutes on two cores). Works with the classic builder and BuildKit.

FROM rust:1.95-bookworm AS chef
# libclang for RocksDB's bindgen; cmake, pkg-config and libssl-dev for the bundled
# librdkafka with TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev cmake pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.76
WORKDIR /src

# The recipe: every manifest and Cargo.lock, nothing else. It changes only when they do.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# Builds every dependency of the breakwater package, exactly as the build below will.
RUN cargo chef cook --release --locked -p breakwater --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p breakwater

FROM debian:bookworm-slim
# wget only for the HEALTHCHECK (curl would pull in libcurl and its dependencies).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 wget \
 && rm -rf /var/lib/apt/lists/*
# A fixed, unprivileged uid and gid (10001), so that a volume or a Kubernetes
# securityContext (runAsUser, fsGroup) can be set up for it. A named volume mounted on the
# state directory starts with the ownership below; a volume created by an older image that
# ran as root must be chowned to 10001 once.
RUN groupadd --system --gid 10001 breakwater \
 && useradd --system --uid 10001 --gid breakwater --home-dir /var/lib/breakwater \
      --no-create-home --shell /usr/sbin/nologin breakwater \
 && install -d -o breakwater -g breakwater -m 0750 /var/lib/breakwater
COPY --from=build /src/target/release/breakwater /usr/local/bin/breakwater
COPY deploy/breakwater.toml /etc/breakwater/breakwater.toml
VOLUME /var/lib/breakwater
EXPOSE 9464
USER 10001:10001
# Healthy once the assigned partitions are restored (GET /ready: 200, else 503). A restore
# of a large changelog can outlast the start period: the container is then reported
# unhealthy until it finishes (Docker reports it; it does not restart the container).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD wget -q -O /dev/null http://127.0.0.1:9464/ready || exit 1
ENTRYPOINT ["breakwater"]
CMD ["run", "--config", "/etc/breakwater/breakwater.toml"]

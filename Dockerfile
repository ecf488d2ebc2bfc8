# The controller's image: `docker build -t ghcr.io/endstate-dev/endstate:v0.1.0 .`
# (deploy/kustomization.yaml names that image; point `images:` at your registry).

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev libssh2-1-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p endstate \
 && install -m 0755 target/release/endstate /usr/local/bin/endstate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libssh2-1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/endstate /usr/local/bin/endstate
# The Deployment mounts writable volumes here and at /tmp; the root filesystem is read-only.
RUN mkdir -p /var/lib/endstate && chown 65532:65532 /var/lib/endstate
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/endstate"]
CMD ["controller"]

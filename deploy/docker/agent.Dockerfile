# The hoist agent's container image: `hoist agent` as user hoist (uid/gid 1000, home
# /home/hoist), its config at /home/hoist/.config/hoist/launch-config.yaml (the
# ConfigMap of deploy/kubernetes), its API key from HOIST_API_KEY.
#
# From source (the default target; needs BuildKit, Docker's default builder since
# version 23, which builds only the stages a target needs):
#
#   docker build -f deploy/docker/agent.Dockerfile -t hoist-agent .
#
# From a binary built beforehand (any builder, the legacy one included; this is what the
# tests do): a build context holding only that binary, named `hoist`, and the target
# `prebuilt`:
#
#   cargo build --release --locked -p hoist
#   mkdir -p /tmp/hoist-ctx && objcopy --strip-debug target/release/hoist /tmp/hoist-ctx/hoist
#   docker build -f deploy/docker/agent.Dockerfile --target prebuilt -t hoist-agent /tmp/hoist-ctx
#
# The binary links glibc dynamically (libc, libm, libgcc_s): a prebuilt one must come from
# a system whose glibc is not newer than BASE_IMAGE's.
#
# Build arguments:
#   BASE_IMAGE  the runtime: a glibc distribution with a shell (and apt-get, when it has
#               no CA certificates yet). Default debian:bookworm-slim.
#   RUST_IMAGE  the toolchain of the source build (Rust >= 1.94.1). Default rust:1-bookworm.
ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

# ---- runtime: the user and its directories, no binary yet.
FROM ${BASE_IMAGE} AS runtime
# CA certificates: the agent verifies its server's and the clouds' TLS certificates
# against the system's roots (the Kubernetes API's CA comes with the service account).
RUN set -eu; \
    if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 1000 hoist; \
    useradd --uid 1000 --gid 1000 --home-dir /home/hoist --create-home \
        --shell /usr/sbin/nologin hoist; \
    mkdir -p /home/hoist/.config/hoist /home/hoist/.local/share/hoist; \
    chown -R 1000:1000 /home/hoist
ENV HOME=/home/hoist USER=hoist
WORKDIR /home/hoist
# Numeric, so that the kubelet can check runAsNonRoot against the image.
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/hoist", "agent"]

# ---- prebuilt: the binary from the build context (owned by root: the agent cannot
# change it). Stages before this one are all the legacy builder builds for it.
FROM runtime AS prebuilt
COPY hoist /usr/local/bin/hoist
# Fails the build when the binary cannot run on this base (a newer glibc, another arch).
RUN ["/usr/local/bin/hoist", "--version"]

# ---- builder: the release binary from the sources (the repository is the context;
# .dockerignore keeps target/ and .git out of it), debug info stripped.
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hoist \
    && objcopy --strip-debug target/release/hoist /usr/local/bin/hoist

# ---- agent (the default target): the runtime with the binary built above.
FROM runtime AS agent
COPY --from=builder /usr/local/bin/hoist /usr/local/bin/hoist
RUN ["/usr/local/bin/hoist", "--version"]

# chanto's container image: `docker build -t chanto .` from the repository root.
# Two stages: the Rust toolchain builds a release binary; the runtime is Debian
# slim with what builds need (bubblewrap, git) and nothing else. README
# ("Install" > "Docker") says how to run it, and what builds need from the
# container runtime (user namespaces, an unmasked /proc).
# Linted by scripts/test-package (hadolint) and crates/chanto/tests/packaging.rs.

FROM rust:1.95-slim-trixie AS builder
WORKDIR /src
# Only what the workspace build reads (examples/site is compiled into `chanto demo`).
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates ./crates
COPY examples ./examples
RUN cargo build --release --locked -p chanto \
 && install -D -m 0755 target/release/chanto /out/chanto

FROM debian:trixie-slim
# bubblewrap: builds refuse to run without it. git: builds clone. curl: the
# health check. Versions are Debian's for this release, not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap git ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/chanto --shell /usr/sbin/nologin chanto \
 && install -d -o chanto -g chanto -m 0700 /var/lib/chanto
COPY --from=builder /out/chanto /usr/local/bin/chanto
USER 10001:10001
WORKDIR /var/lib/chanto
ENV CHANTO_DATA=/var/lib/chanto
VOLUME ["/var/lib/chanto"]
# 8080 the sites (edge), 8787 the API, 8790 /healthz, /readyz and /metrics.
EXPOSE 8080 8787 8790
# /readyz is 200 once routing is loaded and 503 while draining. It uses the
# admin port of CMD below: change both together.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8790/readyz"]
ENTRYPOINT ["chanto"]
# Listen on every interface of the container; publish only what you need
# (the admin port serves /metrics without a token).
CMD ["serve", "--edge", "0.0.0.0:8080", "--api", "0.0.0.0:8787", "--admin", "0.0.0.0:8790"]

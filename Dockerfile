# panelgate container image.
#
#   docker build -t panelgate .
#   docker run -d --name panelgate -p 8080:8080 \
#     -v /srv/panelgate/etc:/etc/panelgate:ro -v /srv/panelgate/data:/var/lib/panelgate \
#     -e MYPANEL_KEY=... panelgate
#
# The config must say `listen: "0.0.0.0:8080"` (the default, 127.0.0.1, is unreachable from
# outside the container) and keep the database on the data volume:
# `database: "sqlite:///var/lib/panelgate/panelgate.db"` (a relative path resolves against the
# config file's folder, /etc/panelgate). See docs/operations.md.

# ---- build ---------------------------------------------------------------------------------
# The project's toolchain is 1.95 (Cargo.toml's rust-version, 1.88, is only the minimum).
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, against placeholder sources: this layer is rebuilt only when
# Cargo.toml or Cargo.lock change, not at every edit of the code.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/protocol.rs \
    && cargo build --release --locked \
    && rm -rf src benches

# The real sources. The SQL migrations of both stores are embedded in the binary at compile
# time (`sqlx::migrate!("./migrations/sqlite")`, `…/postgres`), so they must be here.
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
# COPY keeps the files' own modification times, which may be older than the placeholder
# build's: touch them so that cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/panelgate /out/panelgate

# ---- run -----------------------------------------------------------------------------------
FROM debian:bookworm-slim

# Nothing else is needed: the binary links only glibc (SQLite and rustls are compiled in). Its
# TLS client trusts the Mozilla roots compiled into it (webpki-roots), so ca-certificates is
# only for a future switch to the system's store and for tools run in the container. Not
# pinned: updates of the CA list are wanted at every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 panelgate \
    && useradd --system --uid 10001 --gid panelgate --home-dir /var/lib/panelgate \
       --no-create-home --shell /usr/sbin/nologin panelgate \
    && mkdir -p /etc/panelgate /var/lib/panelgate \
    && chown panelgate:panelgate /var/lib/panelgate

COPY --from=build /out/panelgate /usr/local/bin/panelgate

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/panelgate
# /etc/panelgate: config.yaml (mount read-only). /var/lib/panelgate: the SQLite database.
VOLUME ["/etc/panelgate", "/var/lib/panelgate"]
# 8080: the API (and /metrics, /healthz, /readyz). 9090: the optional `metrics_listen`.
EXPOSE 8080 9090

# The image has no curl, and panelgate has no health-check subcommand. Rather than install
# curl (and its libraries) for this alone, bash — already in the base image — speaks HTTP/1.0
# to /healthz through its /dev/tcp redirection and checks for a 200 status line. /healthz
# answers 200 whenever the process serves; readiness (/readyz) is left to the orchestrator or
# to Prometheus alerts. It assumes the API listens on port 8080 inside the container: change
# the port here (or override with `docker run --health-cmd`) if `listen` says otherwise.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["panelgate"]
CMD ["serve", "--config", "/etc/panelgate/config.yaml", "--log-format", "json"]

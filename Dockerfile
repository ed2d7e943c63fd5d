# syntax=docker/dockerfile:1
#
# jobloop image: the daemon as entrypoint, running the demo job by default.
#
#   docker build -t jobloop .
#   docker run --rm -p 9464:9464 jobloop                       # demo job
#   docker run --rm -p 9464:9464 jobloop run -- /path/to/your-worker args...
#
# Your own worker image: `FROM jobloop` (or COPY --from it) and override CMD.

# ---- build ---------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole source tree minus .dockerignore: Cargo needs every target the
# manifest names (src/, tests/) to be present.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/jobloop /usr/local/bin/jobloop

# ---- runtime -------------------------------------------------------------
FROM debian:bookworm-slim
# A fixed non-root uid/gid, the same as runAsUser in deploy/kubernetes/.
RUN groupadd --system --gid 10001 jobloop \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/jobloop \
       --shell /usr/sbin/nologin jobloop \
    && install -d -o 10001 -g 10001 -m 0750 \
       /var/lib/jobloop /var/lib/jobloop/logs /var/lib/jobloop/state
COPY --from=build /usr/local/bin/jobloop /usr/local/bin/jobloop
COPY --chmod=0755 examples/demo-job.sh /usr/local/share/jobloop/demo-job.sh

# Settings of SPEC section 1 that differ from the defaults: absolute data
# directories (a volume at /var/lib/jobloop keeps runs and state).
ENV AGENT_LISTEN=0.0.0.0:9464 \
    AGENT_LOG_DIR=/var/lib/jobloop/logs \
    AGENT_STATE_DIR=/var/lib/jobloop/state
WORKDIR /var/lib/jobloop
USER 10001:10001
EXPOSE 9464
VOLUME ["/var/lib/jobloop"]

# /health: 200 while working, 503 while halted (unhealthy or token-expired).
# `jobloop status --url` exits 0 when healthy, 1 when halted, 2 when the
# daemon is unreachable, so the image needs no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["jobloop", "status", "--url", "http://127.0.0.1:9464"]

# jobloop runs as PID 1: it forwards SIGTERM to the job's process group,
# reaps zombies and stops within AGENT_SHUTDOWN_GRACE (25 s; compose's
# stop_grace_period and Kubernetes' terminationGracePeriodSeconds are longer).
ENTRYPOINT ["jobloop"]
CMD ["run", "--", "/usr/local/share/jobloop/demo-job.sh"]

# syntax=docker/dockerfile:1
# The feedback sidecar: a second Faust app in the worker image (same build stage, virtual
# environment, user and settings), its own consumer group (INTENTSTREAM_FEEDBACK_APP_ID).
# `intentstream feedback ARGS` hands ARGS to that app's Faust CLI, so its worker is
# `intentstream feedback worker -l info`, as `intentstream worker -l info` is the scorer's.
#
# The worker image already holds the sidecar (streams/sidecar/) and only the `serve` extra: no
# torch. Compose keeps the service behind the `feedback` profile, so a plain `up` does not start
# it (docker/OPS.md).
#
# The base is the worker image, so build that first, then (from the repository root):
#
#   docker build -f docker/sidecar.Dockerfile --build-arg WORKER_IMAGE=intentstream-worker:TAG \
#       -t intentstream-feedback:TAG .
#
# compose instead passes WORKER_IMAGE=worker with the build context `worker` bound to the worker
# service's image (build.additional_contexts: service:worker), so one `build` orders both.

ARG WORKER_IMAGE=intentstream-worker:latest
FROM ${WORKER_IMAGE}
LABEL org.opencontainers.image.title="intentstream-feedback"

# The feedback app talks to Kafka only.
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["python", "/opt/intentstream/healthcheck.py", "--feedback"]

ENTRYPOINT ["intentstream", "feedback", "worker", "-l", "info"]

# syntax=docker/dockerfile:1
# The scoring worker: `intentstream worker -l info` (one Faust worker; scale by replicas, up to
# the partition count, docker/OPS.md). Build from the repository root:
#
#   docker build -f docker/worker.Dockerfile -t intentstream-worker .
#
# Configuration is environment only: INTENTSTREAM_<FIELD> for each field of streams/settings.py.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a self-contained virtual environment in /opt/venv --------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The serving role only (the `serve` extra of pyproject.toml): Faust, aiokafka, the Triton gRPC
# client, Prometheus. No torch, scikit-learn, onnx or matplotlib: Triton runs the network, and
# the worker, the sidecar and `create-topics` import none of them (tests/deploy/test_serve_path.py).
# Only the two packages they load, so edits to tests, docs or the training code do not
# invalidate this layer; inference/model/ (torch) stays out too (.dockerignore). `intentstream
# train`, `backtest`, `bench` and `replay` are for a full checkout (`make venv`), not this image.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY inference ./inference
# A non-editable install: the runtime stage copies /opt/venv and nothing from /src. The checks
# fail the build if the entrypoint cannot start or if a dependency dragged in a training library.
RUN pip install '.[serve]' \
 && intentstream worker --help > /dev/null \
 && intentstream feedback worker --help > /dev/null \
 && python -c "import importlib.util as u; heavy = [m for m in ('torch', 'transformers', 'sklearn', 'onnx', 'onnxruntime', 'matplotlib') if u.find_spec(m)]; assert not heavy, f'training libraries in the serving image: {heavy}'"

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="intentstream-worker" \
      org.opencontainers.image.description="Faust worker: shop.events -> sessions -> Triton -> intent.scores"

# A fixed, unprivileged uid, so volume ownership is predictable across rebuilds.
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" intentstream \
 && useradd --system --uid "${APP_UID}" --gid intentstream --create-home \
      --home-dir /home/intentstream --shell /usr/sbin/nologin intentstream \
 && install -d -o intentstream -g intentstream /var/lib/intentstream

COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/intentstream/healthcheck.py

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    INTENTSTREAM_BROKER_PROFILE=kafka \
    INTENTSTREAM_DATA_DIR=/var/lib/intentstream

USER intentstream
WORKDIR /var/lib/intentstream

# Progress, not reachability: /health beside /metrics is unhealthy when the worker has lag and
# completed no batch for STALL_S (docker/healthcheck.py); a crashed worker exits instead, and
# its restart policy brings it back.
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["python", "/opt/intentstream/healthcheck.py"]

# Faust shuts down on SIGTERM: it commits the offsets already acked and leaves the consumer
# group (a batch not yet acked is consumed again after the rebalance: at-least-once). Give it
# time to do so (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["intentstream", "worker", "-l", "info"]

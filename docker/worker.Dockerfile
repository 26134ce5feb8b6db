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

# torch first, from the CPU index: the package pins torch, and from PyPI that resolves to the
# multi-GB CUDA build. The worker never runs the network (Triton does), so CPU is enough.
# Keep TORCH_VERSION equal to the pin in pyproject.toml.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Only what the wheel needs (pyproject packages: streams, inference, training), so edits to
# tests or docs do not invalidate this layer.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY inference ./inference
COPY training ./training
COPY backtest ./backtest
COPY bench ./bench
# A non-editable install: the runtime stage copies /opt/venv and nothing from /src.
RUN pip install . \
 && python -c "import faust, tritonclient.grpc, streams.settings"

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

# Reachability of Kafka and Triton from the worker's own settings (docker/healthcheck.py);
# a crashed worker exits instead, and its restart policy brings it back.
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["python", "/opt/intentstream/healthcheck.py"]

# Faust shuts down on SIGTERM: it commits the offsets already acked and leaves the consumer
# group (a batch not yet acked is consumed again after the rebalance: at-least-once). Give it
# time to do so (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["intentstream", "worker", "-l", "info"]

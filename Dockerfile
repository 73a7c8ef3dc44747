# vizdex service image.
#   GPU (default): docker build -t vizdex .
#   CPU:           docker build -t vizdex:cpu --build-arg VARIANT=cpu .
# Every step is a plain command that also works in a fresh virtual environment (see README).
ARG VARIANT=gpu
ARG CUDA_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG CPU_BASE=python:3.11-slim-bookworm

# ---- build: a virtual environment with vizdex and its FAISS build ---------------------------
FROM python:3.11-slim-bookworm AS build
ARG VARIANT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY encoders ./encoders
COPY search ./search
COPY indexer ./indexer
COPY web ./web
COPY migrations ./migrations
RUN python -m venv /opt/vizdex \
 && /opt/vizdex/bin/pip install "torch==2.14.1" "torchvision==0.29.1" \
 && /opt/vizdex/bin/pip install ".[${VARIANT}]"

# ---- runtime bases ---------------------------------------------------------------------------
FROM ${CUDA_BASE} AS runtime-gpu
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 curl \
 && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3.11 /usr/local/bin/python3.11

FROM ${CPU_BASE} AS runtime-cpu
RUN apt-get update && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*

# ---- final -----------------------------------------------------------------------------------
FROM runtime-${VARIANT}
COPY --from=build /opt/vizdex /opt/vizdex
RUN useradd --create-home --uid 10001 vizdex && mkdir -p /data /cache \
 && chown vizdex:vizdex /data /cache
USER vizdex
ENV PATH=/opt/vizdex/bin:$PATH \
    VIZDEX_DATA_DIR=/data \
    VIZDEX_HOST=0.0.0.0 \
    VIZDEX_PORT=8000 \
    HF_HOME=/cache
VOLUME ["/data", "/cache"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health/ready || exit 1
CMD ["vizdex", "serve", "--host", "0.0.0.0", "--port", "8000"]

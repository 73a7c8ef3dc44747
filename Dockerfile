# vizdex service image.
#   GPU (default): docker build -t vizdex:gpu .
#   CPU:           docker build -t vizdex:cpu --build-arg VARIANT=cpu \
#                    --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   Run:           docker run --gpus all -p 127.0.0.1:8000:8000 -v vizdex-data:/data -v vizdex-cache:/cache vizdex:gpu
# Every step below is a script under docker/ that also runs outside Docker, and
# tests/e2e/test_docker_recipe.py runs those same commands (install, migrate, serve, health check)
# in a fresh virtual environment. docker-compose.yml wires up the volumes and the GPU.
ARG VARIANT=gpu

# ---- base: Python on the variant's OS image ----------------------------------------------------
# GPU: an official CUDA 12 *runtime* image. The pip wheels carry their own CUDA user-space
# libraries (torch 2.14.1: CUDA 13; faiss-gpu-cu12: cudart + cuBLAS 12 through nvidia-*-cu12), so
# the base adds CUDA 12 runtime libraries on the system path plus the NVIDIA_* settings that make
# the container toolkit mount the driver. The host needs an NVIDIA driver new enough for CUDA 13
# (R580+, for torch) and the NVIDIA container toolkit. Ubuntu 24.04's Python is 3.12.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS base-gpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# CPU: plain Debian with Python 3.11.
FROM python:3.11.13-slim-bookworm AS base-cpu

FROM base-${VARIANT} AS base
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ---- build: a virtual environment with vizdex and the variant's FAISS build --------------------
FROM base AS build
ARG VARIANT
# Optional index for torch only (https://download.pytorch.org/whl/cpu for CPU-only wheels).
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the package build needs; tests/e2e/test_docker_recipe.py installs from exactly these.
COPY pyproject.toml README.md ./
COPY vizdex ./vizdex
COPY encoders ./encoders
COPY search ./search
COPY indexer ./indexer
COPY web ./web
COPY migrations ./migrations
COPY docker/install.sh ./docker/
RUN sh docker/install.sh /opt/vizdex "$VARIANT"

# ---- runtime: the environment, two scripts, a non-root user ------------------------------------
FROM base AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="vizdex" \
      org.opencontainers.image.description="Self-hosted image search with built-in CLIP and DINOv3 encoders" \
      org.opencontainers.image.version="0.2.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.vizdex.variant="${VARIANT}"
# A fixed uid, so volume ownership is predictable and the image runs under runAsNonRoot policies.
RUN groupadd --gid 10001 vizdex \
 && useradd --create-home --uid 10001 --gid 10001 vizdex \
 && mkdir -p /data /cache \
 && chown vizdex:vizdex /data /cache
COPY --from=build /opt/vizdex /opt/vizdex
COPY docker/start.sh docker/healthcheck.sh /app/docker/
WORKDIR /app
# The catalog, indexes, thumbnails and uploads live in /data; model downloads in the Hugging Face
# cache (/cache). Both are volumes: recreating the container keeps the collections and the models.
ENV PATH=/opt/vizdex/bin:$PATH \
    VIZDEX_DATA_DIR=/data \
    VIZDEX_PORT=8000 \
    HF_HOME=/cache
USER 10001:10001
VOLUME ["/data", "/cache"]
EXPOSE 8000
# Ready means models loaded and warmed, indexes loaded and the database answering. The first start
# downloads the models into /cache, hence the long start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
  CMD ["sh", "/app/docker/healthcheck.sh"]
CMD ["sh", "/app/docker/start.sh"]

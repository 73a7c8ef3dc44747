# vizdex service image.
#   GPU (default): docker build -t vizdex .                       (torch CUDA + faiss-gpu-cu12)
#   CPU:           docker build -t vizdex:cpu --build-arg VARIANT=cpu .   (faiss-cpu)
# The CUDA runtime libraries come with the torch and faiss-gpu-cu12 wheels (nvidia-* packages);
# the host only needs the NVIDIA driver and container toolkit (`docker run --gpus all`).
# Every step is a plain command that also works in a fresh virtual environment (see README).
ARG PYTHON_BASE=python:3.11-slim-bookworm

# ---- build: a virtual environment with vizdex and the chosen FAISS build ---------------------
FROM ${PYTHON_BASE} AS build
ARG VARIANT=gpu
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

# ---- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_BASE}
RUN apt-get update && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 vizdex && mkdir -p /data /cache \
 && chown vizdex:vizdex /data /cache
COPY --from=build /opt/vizdex /opt/vizdex
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

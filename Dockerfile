# syntax=docker/dockerfile:1
# Two images from one file:
#   api     FastAPI + uvicorn; no torch, no onnxruntime (it only stores uploads and queues job ids)
#   worker  Celery worker + the analysis engine (torch, onnxruntime)
# torch comes from PyPI by default (its Linux wheel runs on an NVIDIA GPU when one is visible and
# on the CPU otherwise). For a smaller CPU-only worker image, point TORCH_INDEX_URL at PyTorch's
# CPU wheel index:  docker build --target worker --build-arg TORCH_INDEX_URL=<cpu index URL> .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NEURONSCOPE_DATA_DIR=/data
RUN useradd --create-home --uid 10001 neuronscope \
    && mkdir -p /data \
    && chown neuronscope:neuronscope /data
WORKDIR /app
COPY pyproject.toml README.m[d] ./
COPY neuronscope ./neuronscope
COPY service ./service
COPY worker ./worker

FROM base AS api
RUN pip install ".[api]"
USER neuronscope
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["python", "-m", "service.server", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=
# A GPU worker image: --build-arg GPU=1 --build-arg TORCH_INDEX_URL=<PyTorch's cu130 index>, i.e.
# onnxruntime-gpu >= 1.27 (the engine-gpu extra) and torch both built for CUDA 13 (a CUDA-12
# onnxruntime-gpu next to CUDA-13 torch cannot load libcublasLt.so.12). Run it with
# NEURONSCOPE_DEVICE=cuda and --pool solo.
ARG GPU=
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"; \
    else pip install "$TORCH_SPEC"; fi \
    && if [ -n "$GPU" ]; then pip install ".[engine-gpu]"; else pip install ".[engine]"; fi
USER neuronscope
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO", "--concurrency", "1"]

# edgehal serve on an NVIDIA GPU: onnxruntime-gpu + TensorRT, Open Inference Protocol on :8000 (HTTP) and :8001 (gRPC).
#
# x86_64 / SBSA server GPU (TensorRT and onnxruntime-gpu from PyPI):
#   docker build -t edgehal .
#   docker run --gpus all -p 8000:8000 -p 8001:8001 -v "$PWD/repo:/models:ro" edgehal
#
# Jetson (JetPack 6, L4T r36): the same file on an L4T base image. TensorRT
# then comes from JetPack (python3-libnvinfer, seen through the venv's system
# site-packages), so the tensorrt extra is left out automatically; Jetson builds
# of onnxruntime-gpu come from the index named by PIP_EXTRA_INDEX_URL:
#   docker build -t edgehal:jetson \
#     --build-arg BASE_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0 \
#     --build-arg PIP_EXTRA_INDEX_URL=https://pypi.jetson-ai-lab.io/jp6/cu126 .
#   docker run --runtime nvidia -p 8000:8000 -p 8001:8001 -v "$PWD/repo:/models:ro" edgehal:jetson
#
# /models is a Triton-style repository (`edgehal export-triton` writes one) or a
# folder of .onnx files. Engines are built on the target: run
# `docker run ... edgehal build-engine ...` inside the container that serves them.
ARG BASE_IMAGE=nvcr.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

# Extras to install; empty means "gpu,tensorrt,serve", or "gpu,serve" where
# JetPack already ships TensorRT. serve brings what reading /models' config.pbtxt
# and the gRPC service import (tritonclient's ModelConfig, protobuf, grpcio).
# Never "cpu": onnxruntime and onnxruntime-gpu must not coexist.
# tests/test_docker_extras.py reads the extras="..." lists below and serves an
# exported repository from a fresh venv holding only them (cpu for gpu).
ARG EDGEHAL_EXTRAS=""
ARG PIP_EXTRA_INDEX_URL=""

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Versions follow the base image's distribution (Ubuntu 24.04 or the L4T
# image's 22.04), so they are not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# --system-site-packages: JetPack's TensorRT bindings live in the system Python.
RUN python3 -m venv --system-site-packages /opt/venv

WORKDIR /opt/edgehal
COPY pyproject.toml README.md ./
COPY edgehal ./edgehal
# DL3013: this installs the project itself; its dependency ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN extras="${EDGEHAL_EXTRAS}"; \
    if [ -z "${extras}" ]; then \
        if dpkg-query -W -f='${Status}' python3-libnvinfer 2>/dev/null | grep -q "install ok installed"; then \
            extras="gpu,serve"; \
        else \
            extras="gpu,tensorrt,serve"; \
        fi; \
    fi; \
    case ",${extras}," in *,cpu,*) echo "EDGEHAL_EXTRAS must not contain cpu" >&2; exit 1;; esac; \
    echo "installing edgehal[${extras}]"; \
    pip install --no-cache-dir ${PIP_EXTRA_INDEX_URL:+--extra-index-url "${PIP_EXTRA_INDEX_URL}"} \
        "/opt/edgehal[${extras}]" \
    && python -c "import edgehal, onnxruntime; print('edgehal', edgehal.__version__, 'onnxruntime', onnxruntime.__version__)"

RUN groupadd --system --gid 10001 edgehal \
    && useradd --system --uid 10001 --gid edgehal --create-home --home-dir /home/edgehal edgehal \
    && mkdir -p /models \
    && chown edgehal:edgehal /models
# Numeric, so the host can resolve it (and Kubernetes' runAsNonRoot can check it).
USER 10001:10001
WORKDIR /home/edgehal

EXPOSE 8000 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["edgehal"]
CMD ["serve", "/models", "--host", "0.0.0.0", "--port", "8000", "--grpc-port", "8001"]

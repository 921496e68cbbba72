# syntax=docker/dockerfile:1
# Trainer image: the base_image of every KFP component and of Katib trials. No ENTRYPOINT, so KFP
# and Katib run their own command (`python -m mammosynth.<stage>` or KFP's executor).
#
# TensorFlow's documented pip route for GPUs: `tensorflow[and-cuda]` ships CUDA/cuDNN as wheels, so
# the image needs only the host driver, which the NVIDIA container runtime / device plugin mounts.
# Build from the repository root (or `make images`); the repository is the only build context:
#   docker build -f images/trainer.Dockerfile -t mammosynth-trainer .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/mammosynth

# Group 0 with group write: OpenShift-style clusters run images under an arbitrary UID in group 0.
RUN groupadd --gid 1000 mammosynth \
    && useradd --uid 1000 --gid 1000 --groups 0 --create-home --shell /usr/sbin/nologin mammosynth

WORKDIR /opt/mammosynth

# Same versions the test suite ran with (images/lock.py), CPU TensorFlow swapped for the GPU build;
# the NVIDIA wheels that build pulls in are pinned by the constraints file.
COPY images/requirements-trainer.txt images/constraints-cuda.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements-trainer.txt -c /tmp/constraints-cuda.txt \
    && rm /tmp/requirements-trainer.txt /tmp/constraints-cuda.txt

COPY pyproject.toml ./
COPY src ./src
# pyproject names README.md as the long description; an image does not need it, so an empty one
# keeps the build independent of the docs. The deploy and tune steps check what they apply against
# the CRD schemas (mammosynth.cluster.k8s), which install with the package (src/mammosynth/cluster/schemas).
RUN touch README.md \
    && pip install --no-cache-dir --no-deps . \
    && python -c "import mammosynth.cli, mammosynth.cluster.k8s as k; k.load_crd_schema(k.INFERENCE_SERVICE_CRD, 'v1beta1'); k.load_crd_schema(k.SERVING_RUNTIME_CRD, 'v1alpha1')"

# KFP's v2 launcher stages artifacts under /gcs, /minio and /s3 (a fixed contract); create them
# writable so the non-root user can run components even where the backend mounts no emptyDir there.
RUN mkdir -p /gcs /minio /s3 /workspace \
    && chown -R 1000:0 /gcs /minio /s3 /workspace /home/mammosynth \
    && chmod -R g=u /gcs /minio /s3 /workspace /home/mammosynth

USER 1000:0
WORKDIR /workspace

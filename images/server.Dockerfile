# syntax=docker/dockerfile:1
# KServe predictor image for mammosynth's own model server (`python -m mammosynth.serving`), used by
# the mammosynth-server ServingRuntime. CPU TensorFlow: one small classifier per request batch does
# not need a GPU. Build from the repository root:
#   docker build -f images/server.Dockerfile -t mammosynth-server .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/home/mammosynth

RUN groupadd --gid 1000 mammosynth \
    && useradd --uid 1000 --gid 1000 --groups 0 --create-home --shell /usr/sbin/nologin mammosynth

WORKDIR /opt/mammosynth

COPY images/requirements-server.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY pyproject.toml ./
COPY src ./src
# See trainer.Dockerfile: README.md is only the package's long description.
RUN touch README.md \
    && pip install --no-cache-dir --no-deps . \
    && python -c "import mammosynth.serving"

USER 1000:0
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "mammosynth.serving"]

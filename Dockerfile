# The GPU image of the docker-gpu, kubernetes-gpu and vertex-gpu deployments (prefect.yaml).
#   docker build -t dreambooth:latest .
# The base image brings CUDA and a CUDA build of PyTorch; the project's own
# requirements are installed on top of it (torch>=2.4 is already met).
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

# tini as PID 1: forwards SIGTERM (preemption) to the flow run and reaps child processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

ENV DREAMBOOTH_HOME=/app \
    DREAMBOOTH_CACHE=/cache \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml README.md prefect.yaml ./
COPY flows flows
COPY dreambooth_core dreambooth_core
COPY tasks tasks
COPY blocks blocks
# The [gpu] extra: bitsandbytes, for the 8-bit AdamW that `dreambooth plan` and --memory auto count on.
RUN pip install --no-cache-dir ".[gpu]" && python -c "import torch, flows.dreambooth, bitsandbytes"

ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "prefect.engine"]

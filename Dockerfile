# syntax=docker/dockerfile:1
# One image for every cloudagents service. SERVICE picks the entry point at run time:
#   docker run -e SERVICE=run_executor IMAGE
# runs `functions-framework --source services/run_executor/main.py --target run_executor --asgi`.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: resolve the locked dependencies (no dev/local groups) into /app/.venv
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install "uv==${UV_VERSION}"
WORKDIR /app
# Dependencies first, so code changes reuse this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project
# Then the library itself, installed (not editable) from uv.lock's pinned versions.
COPY libs ./libs
RUN uv sync --frozen --no-default-groups --no-editable

# ---- runtime
FROM ${PYTHON_IMAGE}
# bubblewrap (+ util-linux's setpriv/prlimit, already in the base image) is the boundary around
# user-stored functions (docs/functions.md); it needs Cloud Run's second-generation environment.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cloudagents
WORKDIR /app
# libs/ is already installed into the venv (see the build stage); services/ holds the entry points.
COPY --from=build /app/.venv /app/.venv
COPY services ./services
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080
# Cloud Run sets PORT; SERVICE is set per service by Terraform (one image, five entry points).
# No USER line: services/entrypoint.sh starts run_executor, handoff_broker and
# context_snapshotter as uid 10001 with no capabilities, and keeps root for the api and the tool
# invoker only, whose sandbox drops each stored-function call to a uid of its own (setpriv needs
# CAP_SETUID; docs/functions.md, "Deploying").
ENTRYPOINT ["/bin/sh", "services/entrypoint.sh"]

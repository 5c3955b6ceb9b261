# syntax=docker/dockerfile:1
# Boardcast production image: `docker build -t boardcast .`
#
# The builder stage installs the project and its dependencies into a virtualenv; the runtime
# stage copies only that virtualenv, so no source tree, pip cache or build tooling ships.
# In production DATABASE_URL and REDIS_URL are required: the server refuses to start without
# them (embedded PostgreSQL/Redis are for development only).

ARG PYTHON_IMAGE=python:3.13-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src
# .dockerignore keeps the local virtualenv, data folder, caches and VCS out of the context.
COPY . .
# A regular (non-editable) install: the packages land in the virtualenv's site-packages and
# the `boardcast` console script in /opt/venv/bin.
RUN pip install . \
    && python -c "import server, actors, storage, protocol" \
    && boardcast --help >/dev/null

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 boardcast \
    && useradd --system --uid 10001 --gid boardcast --home-dir /app --shell /usr/sbin/nologin boardcast \
    && mkdir -p /app \
    && chown boardcast:boardcast /app

COPY --from=builder /opt/venv /opt/venv

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BOARDCAST_ENV=production \
    BOARDCAST_HOST=0.0.0.0 \
    BOARDCAST_LOG_FORMAT=json

WORKDIR /app
USER boardcast

EXPOSE 8080

# /health answers 200 while PostgreSQL responds (Redis down: still 200, "status": "degraded"),
# 503 when it does not (urlopen raises on it).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["boardcast"]
CMD ["serve"]

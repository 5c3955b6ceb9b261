# syntax=docker/dockerfile:1
# Boardcast production image: `docker build -t boardcast .`
#
# The builder stage installs the project and its dependencies into a virtualenv; the runtime
# stage copies only that virtualenv, so no source tree, pip cache or build tooling ships.
# In production `serve` requires DATABASE_URL and REDIS_URL (embedded PostgreSQL/Redis are for
# development only) and `migrate` requires DATABASE_URL.

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
# Dependencies first, in a layer of their own that only pyproject.toml feeds: a change to the
# source reuses it from the build cache instead of downloading every dependency again.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# Then the source (.dockerignore keeps the local virtualenv, data folder, caches, .env and VCS
# out of the context). A regular (non-editable) install with --no-deps: the dependencies are
# already there, and `pip check` proves it; the packages land in the virtualenv's
# site-packages and the `boardcast` console script in /opt/venv/bin.
COPY . .
RUN pip install --no-deps . \
    && pip check \
    && python -c "import server, actors, storage, protocol" \
    && boardcast --help >/dev/null

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 boardcast \
    && useradd --system --uid 10001 --gid boardcast --home-dir /app --shell /usr/sbin/nologin boardcast \
    && mkdir -p /app /var/lib/boardcast/blobs \
    && chown boardcast:boardcast /app /var/lib/boardcast/blobs

COPY --from=builder /opt/venv /opt/venv

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BOARDCAST_ENV=production \
    BOARDCAST_HOST=0.0.0.0 \
    BOARDCAST_PORT=8080 \
    BOARDCAST_LOG_FORMAT=json

WORKDIR /app
USER boardcast

EXPOSE 8080

# Liveness, on the port the server listens on (BOARDCAST_PORT, read when the check runs):
# /health/live answers 200 whenever the process does. Not /health/ready: an orchestrator that
# replaces unhealthy containers would replace every node during a PostgreSQL outage, which
# brings nothing back; load balancers probe /health/ready themselves.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('BOARDCAST_PORT') or '8080'; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["boardcast"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# One image for every role of the stack: `docker build -t yihoufu:0.1.0 .` (docker-compose.yml
# builds it too). The command picks the role: api (the default), worker, migrate, and for the
# sandbox only bureau and credit (the simulators); see entrypoint.py.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- the dependencies, exactly as pinned (with their hashes) in requirements.lock -------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# --no-deps: what the lock does not name is not installed
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock

# --- the runtime: the virtualenv, the source, a user without privileges ---------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 yihoufu \
 && useradd --system --uid 10001 --gid yihoufu --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin yihoufu \
 && install -d -o yihoufu -g yihoufu -m 0750 /data  # the sandbox simulators' SQLite files
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# the repository root is the import root; .dockerignore keeps out tests, secrets (.env) and caches.
# The source belongs to root: the app cannot rewrite itself. Compiled here, since it cannot write
# its own bytecode at run time either.
COPY . /app
RUN python -m compileall -q /app
# the user yihoufu, by number: a runtime can check it is not root without reading /etc/passwd
USER 10001:10001
EXPOSE 8000
# per role (see entrypoint.py): the API's /healthz (database and Temporal reachable), the worker
# seen polling its task queue by Temporal, a simulator's port open
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
  CMD ["python", "/app/entrypoint.py", "health"]
ENTRYPOINT ["python", "/app/entrypoint.py"]
CMD ["api"]

# syntax=docker/dockerfile:1
# One image, every role: `serve` (default: API + worker on SQLite), `api`, `worker`, `migrate`.

FROM python:3.11-slim AS build
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir "uv==0.13.9"
WORKDIR /app
# Dependencies first, in their own layer, exactly as locked.
COPY pyproject.toml uv.lock README.md ./
COPY connectors/demo/pyproject.toml connectors/demo/pyproject.toml
COPY connectors/csv/pyproject.toml connectors/csv/pyproject.toml
COPY connectors/salesforce/pyproject.toml connectors/salesforce/pyproject.toml
COPY connectors/hubspot/pyproject.toml connectors/hubspot/pyproject.toml
COPY connectors/rest/pyproject.toml connectors/rest/pyproject.toml
RUN uv sync --frozen --no-dev --all-packages --no-install-workspace
# Then the project itself, installed (not editable) with its migrations inside the package.
COPY . .
RUN uv sync --frozen --no-dev --all-packages --no-editable

FROM python:3.11-slim
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid 10001 --home-dir /app app \
    && mkdir /data && chown 10001:10001 /data
COPY --from=build /app/.venv /app/.venv
COPY config /app/config
WORKDIR /app
USER 10001:10001
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CRM_PERF_SYNC_DATABASE_URL=sqlite:////data/crm-perf-sync.db \
    CRM_PERF_SYNC_HOST=0.0.0.0 \
    CRM_PERF_SYNC_LOG_FORMAT=json \
    CRM_PERF_SYNC_DEMO_KEY=false
VOLUME /data
# 8000: the API (serve, api); 9464: a worker's own /metrics.
EXPOSE 8000 9464
# The API roles answer /healthz; compose.yaml checks a worker on its metrics port instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
# exec form: crm-perf-sync is PID 1's only child-free process and receives SIGTERM directly.
ENTRYPOINT ["crm-perf-sync"]
CMD ["serve"]

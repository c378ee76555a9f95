# Production image of a stream_guard worker. Scale by running more replicas with the same group id.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY stream_guard ./stream_guard
COPY schemas ./schemas
# The versions the test suite ran on (constraints.txt, `make constraints`).
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 streamguard
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY schemas /opt/stream-guard/schemas
USER streamguard
WORKDIR /opt/stream-guard
ENV STREAM_GUARD_WORKER__LOG_FORMAT=json
# /metrics (Prometheus), /healthz (liveness), /readyz (readiness): [observability] port.
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["stream-guard", "health"]
ENTRYPOINT ["stream-guard"]
CMD ["run", "--config", "/etc/stream-guard/config.toml"]

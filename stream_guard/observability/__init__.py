"""Operating a worker: Prometheus metrics, liveness and readiness probes."""

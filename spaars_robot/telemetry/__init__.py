"""Per-request telemetry: the record, its ZeroMQ PUB stream, MCAP recording, Prometheus metrics, dashboard."""

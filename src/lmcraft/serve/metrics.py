"""The server's Prometheus metrics (``GET /metrics``): requests by route and status, latency, queue depth,
batch sizes and tokens generated. Each server has a registry of its own, so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lmcraft_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("lmcraft_request_seconds", "time from a request's arrival to its answer",
                                 ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.queue_depth = Gauge("lmcraft_queue_inputs", "inputs waiting for a batch", ["model"],
                                 registry=self.registry)
        self.batch_size = Histogram("lmcraft_batch_inputs", "inputs per batch run", ["model"],
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_tokens = Histogram("lmcraft_batch_tokens", "padded tokens per batch run", ["model"],
                                      registry=self.registry,
                                      buckets=(16, 64, 256, 1024, 4096, 16384, 65536))
        self.generated = Counter("lmcraft_generated_tokens", "tokens generated", ["model"], registry=self.registry)

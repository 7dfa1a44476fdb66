"""Prometheus metrics of one app instance (its own registry: two apps never share counters)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ttscale.types import Generation

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, queue_depth: Callable[[], int], in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("ttscale_requests", "HTTP requests answered, by endpoint and status.",
                                ["endpoint", "status"], registry=r)
        self.strategy = Counter("ttscale_strategy_requests", "Completion requests served, by strategy.",
                                ["strategy"], registry=r)
        self.tokens = Counter("ttscale_tokens", "Tokens charged to answered requests, by kind (prefilled, generated).",
                              ["kind"], registry=r)
        self.backend_tokens = Counter("ttscale_backend_tokens",
                                      "Tokens the backend processed, including work for cancelled requests.",
                                      ["kind"], registry=r)
        self.samples = Counter("ttscale_samples", "Samples generated.", registry=r)
        self.latency = Histogram("ttscale_request_latency_seconds", "Completion request latency.", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ttscale_batch_requests", "Generation requests per backend call.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.rejected = Counter("ttscale_rejected", "Requests refused before work started, by reason.", ["reason"],
                                registry=r)
        self.cancelled = Counter("ttscale_cancelled", "Requests whose work was cancelled, by reason.", ["reason"],
                                 registry=r)
        g = Gauge("ttscale_queue_depth", "Admitted requests waiting for a worker.", registry=r)
        g.set_function(lambda: float(queue_depth()))
        f = Gauge("ttscale_in_flight", "Requests admitted and not yet finished.", registry=r)
        f.set_function(lambda: float(in_flight()))

    def observe_batch(self, gens: list[Generation]) -> None:
        self.batch_size.observe(len(gens))
        self.backend_tokens.labels("prefilled").inc(sum(g.prefilled_tokens for g in gens))
        self.backend_tokens.labels("generated").inc(sum(g.generated_tokens for g in gens))
        self.samples.inc(sum(len(g.completions) for g in gens))

    def render(self) -> bytes:
        return generate_latest(self.registry)

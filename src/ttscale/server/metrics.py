"""Prometheus metrics of one app instance (its own registry: two apps never share counters).

With ``ttscale serve --workers N`` the server's processes share one directory of metric files
(prometheus_client's multiprocess mode), and ``/metrics`` answers with their sums whichever process
the scrape reaches."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from ttscale.types import Generation

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The server's counters, histograms and gauges.

    ``shared_dir``: the directory the server's worker processes share (multiprocess mode). Counters and
    histograms then live in files there; the two gauges, which are per process, are written by
    :meth:`refresh` (the app calls it every second and before each scrape) and summed over live processes.
    """

    def __init__(self, queue_depth: Callable[[], int], in_flight: Callable[[], int],
                 shared_dir: str | None = None) -> None:
        self.shared_dir = shared_dir
        if shared_dir is not None and not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus_client picks its value store when first imported (a forked worker imported it
            # before the directory existed); its files go to $PROMETHEUS_MULTIPROC_DIR, which the
            # supervisor sets to ``shared_dir`` (ttscale.server.processes)
            values.ValueClass = values.MultiProcessValue()
        self._queue_depth, self._in_flight = queue_depth, in_flight
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
        self.queue_gauge = Gauge("ttscale_queue_depth", "Admitted requests waiting for a worker.", registry=r,
                                 multiprocess_mode="livesum")
        self.in_flight_gauge = Gauge("ttscale_in_flight", "Requests admitted and not yet finished.", registry=r,
                                     multiprocess_mode="livesum")
        if shared_dir is None:
            self.queue_gauge.set_function(lambda: float(queue_depth()))
            self.in_flight_gauge.set_function(lambda: float(in_flight()))

    def refresh(self) -> None:
        """Write this process's gauges to the shared files (multiprocess mode; a no-op otherwise)."""
        if self.shared_dir is not None:
            self.queue_gauge.set(self._queue_depth())
            self.in_flight_gauge.set(self._in_flight())

    def observe_batch(self, gens: list[Generation]) -> None:
        self.batch_size.observe(len(gens))
        self.backend_tokens.labels("prefilled").inc(sum(g.prefilled_tokens for g in gens))
        self.backend_tokens.labels("generated").inc(sum(g.generated_tokens for g in gens))
        self.samples.inc(sum(len(g.completions) for g in gens))

    def render(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        self.refresh()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.shared_dir)
        return generate_latest(merged)

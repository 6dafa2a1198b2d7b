"""Prometheus metrics, one registry per app (several apps can live in one process).

Exposed at ``GET /metrics``:

* ``reid_request_duration_seconds{method,route,status}``: latency histogram per route template
  (``/tracklets/{tracklet_id}``, not the raw path, so ids do not explode the label set);
* ``reid_frames_embedded_total{role}`` and ``reid_tracklets_embedded_total{role}``;
* ``reid_batch_size``: tracklets per ONNX Runtime call (micro-batching at work when > 1);
* ``reid_inference_duration_seconds``: wall time of one ONNX Runtime call;
* ``reid_gallery_tracklets``: tracklets in the gallery, read at scrape time;
* ``reid_errors_total{code}``: client and server errors by error code;
* ``reid_model_info{provider,model_name,model_version,gallery_backend}``: always 1.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """The service's metrics and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_cpu_seconds_total, resident memory, open files: how busy the server's cores are
        ProcessCollector(registry=self.registry)
        self.request_duration = Histogram(
            "reid_request_duration_seconds",
            "HTTP request latency by route template.",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.frames_embedded = Counter(
            "reid_frames_embedded",
            "Frames run through the network (after subsampling).",
            ("role",),
            registry=self.registry,
        )
        self.tracklets_embedded = Counter(
            "reid_tracklets_embedded",
            "Tracklets run through the network.",
            ("role",),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "reid_batch_size",
            "Tracklets per ONNX Runtime call.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "reid_inference_duration_seconds",
            "Wall time of one ONNX Runtime call.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gallery_size = Gauge(
            "reid_gallery_tracklets",
            "Tracklets enrolled in the gallery.",
            registry=self.registry,
        )
        self.errors = Counter(
            "reid_errors",
            "Error responses by error code.",
            ("code",),
            registry=self.registry,
        )
        self.model_info = Info(
            "reid_model",
            "The model, the ONNX Runtime execution provider running it and the gallery backend.",
            registry=self.registry,
        )

    def describe_model(
        self, provider: str, model_name: str, model_version: str, gallery_backend: str
    ) -> None:
        self.model_info.info(
            {
                "provider": provider,
                "model_name": model_name,
                "model_version": model_version,
                "gallery_backend": gallery_backend,
            }
        )

    def observe_run(self, tracklets: int, frames: int, seconds: float) -> None:
        """The encoder's observer of every ONNX Runtime call."""
        self.batch_size.observe(tracklets)
        self.inference_duration.observe(seconds)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request, labelled with the route template that served it."""
        self.request_duration.labels(method, route, str(status)).observe(seconds)

    def count_embedded(self, role: str, frames: int) -> None:
        self.frames_embedded.labels(role).inc(frames)
        self.tracklets_embedded.labels(role).inc()

    def track_gallery(self, count: Callable[[], int]) -> None:
        """Read the gallery size at every scrape, so it is right after any add or delete."""
        self.gallery_size.set_function(lambda: float(count()))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

"""What the service opens when it starts and closes when it stops: the model (its encoder and
optional pair scorer), the gallery, the micro-batcher and the thread pools.

:func:`open_runtime` runs in the app's lifespan (in a worker thread: loading a model and
rebuilding a FAISS index take seconds), so a model or gallery that cannot be served fails the
start with a message saying why and what to do.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio

from service.backends import open_gallery
from service.batching import MicroBatcher
from service.encoder import Encoder
from service.gallery import Gallery, GalleryError, GalleryModelMismatch, ModelSignature
from service.metrics import ServiceMetrics
from service.onnx_session import ArenaPolicy
from service.rescoring import PairScorer
from service.settings import Settings

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class LoadedModel:
    encoder: Encoder
    scorer: PairScorer | None  # None: the model was exported without a pair scorer
    rerank_default: int  # REID_RERANK, or 0 without a pair scorer


@dataclass
class Runtime:
    """Everything the lifespan opens and the routes use."""

    model: LoadedModel
    gallery: Gallery
    batcher: MicroBatcher
    executor: ThreadPoolExecutor
    decode_limiter: anyio.CapacityLimiter

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder

    async def close(self) -> None:
        await self.batcher.drain()
        self.executor.shutdown(wait=True)
        self.gallery.close()


def load_model(settings: Settings, metrics: ServiceMetrics) -> LoadedModel:
    """The encoder of ``REID_MODEL_PATH`` and, when its card names one, its pair scorer."""
    encoder = Encoder(
        settings.model_path,
        max_embedded_frames=settings.max_embedded_frames,
        use_cuda=settings.use_cuda,
        intra_op_threads=settings.ort_intra_op_threads,
        arena=ArenaPolicy(settings.ort_arena_frames),
        spin=settings.ort_spin,
        on_run=metrics.observe_run,
    )
    if not encoder.card.get("pair_scorer"):
        if settings.rerank:
            log.warning(
                "REID_RERANK=%d but model %s has no pair scorer (exported before re-scoring "
                "existed): queries are not re-scored. Re-export it with `python -m training "
                "export`",
                settings.rerank,
                encoder.name,
            )
        return LoadedModel(encoder, scorer=None, rerank_default=0)
    scorer = PairScorer(
        settings.model_path,
        encoder.card,
        use_cuda=settings.use_cuda,
        intra_op_threads=settings.ort_intra_op_threads,
        arena=ArenaPolicy(settings.ort_arena_frames),
        spin=settings.ort_spin,
    )
    return LoadedModel(encoder, scorer, rerank_default=settings.rerank)


def open_settings_gallery(settings: Settings, encoder: Encoder) -> Gallery:
    """The gallery the settings name, refused when another model built it."""
    backend, location = settings.gallery_backend, settings.gallery_location()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    signature = ModelSignature(version=encoder.version, embedding_size=encoder.embedding_size)
    try:
        return open_gallery(backend, location, signature, **settings.gallery_options())
    except GalleryModelMismatch as exc:
        raise StartupError(
            f"the {backend} gallery at {location} was built with another model "
            f"({exc}); this service runs model {encoder.name} version {encoder.version} with "
            f"{encoder.embedding_size}-d embeddings. Embeddings of different models cannot be "
            "compared: point REID_DATA_DIR (or REID_MILVUS_URI) at a new gallery and re-enroll, "
            "or serve the model the gallery was built with"
        ) from exc
    except GalleryError as exc:
        raise StartupError(f"cannot open the {backend} gallery at {location}: {exc}") from exc


def open_runtime(settings: Settings, metrics: ServiceMetrics) -> Runtime:
    model = load_model(settings, metrics)
    gallery = open_settings_gallery(settings, model.encoder)
    executor = ThreadPoolExecutor(
        max_workers=settings.inference_workers, thread_name_prefix="reid-infer"
    )
    batcher = MicroBatcher(
        model.encoder,
        executor,
        enabled=settings.batching,
        max_size=settings.batch_max_size,
        max_frames=settings.batch_max_frames,
        wait_ms=settings.batch_wait_ms,
    )
    encoder = model.encoder
    metrics.describe_model(
        encoder.provider, encoder.name, encoder.version, settings.gallery_backend
    )
    metrics.track_gallery(gallery.count)
    return Runtime(
        model=model,
        gallery=gallery,
        batcher=batcher,
        executor=executor,
        decode_limiter=anyio.CapacityLimiter(settings.decode_workers),
    )

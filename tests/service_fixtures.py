"""Fixtures and helpers for the service tests: a real exported model, a real uvicorn process.

The model is a randomly initialised ASTPN exported by ``training.export`` (the same code path as
the shipped model), so the tests exercise the real card checks, ONNX Runtime and gallery; only
accuracy is meaningless, and the tests only rely on a random network still telling an identical
tracklet from very different ones.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

import bench.server
from model.card import CardError, card_path_for, load_card, verify_card
from service.backends import get_backend

ROOT = Path(__file__).resolve().parents[1]

#: Why the Milvus backend cannot run here (its extra is not installed), or None. CI installs
#: ``.[train,dev]``, and ``dev`` pulls the ``milvus`` extra, so there these tests always run.
MILVUS_MISSING = get_backend("milvus").missing()
requires_milvus = pytest.mark.skipif(
    MILVUS_MISSING is not None, reason=f"Milvus backend test: {MILVUS_MISSING}"
)

#: Limits of the shared test server: small, so that violating them is cheap.
SERVER_ENV: dict[str, str] = {
    "REID_MAX_REQUEST_BYTES": str(4 * 1024 * 1024),
    "REID_MAX_FRAMES_PER_TRACKLET": "64",
    "REID_MAX_EMBEDDED_FRAMES": "16",
    "REID_MAX_PIXELS_PER_TRACKLET": "2000000",
    "REID_MAX_ZIP_ENTRIES": "100",
    "REID_MAX_ZIP_UNCOMPRESSED_BYTES": str(2 * 1024 * 1024),
    "REID_MAX_TOP_K": "50",
    "REID_MAX_BATCH_FRAMES": "200",
    "REID_BATCH_WAIT_MS": "5",
}
#: Two shared cores: one ONNX thread per call keeps the suite from oversubscribing.
SUITE_THREADS: dict[str, str] = {
    "REID_ORT_INTRA_OP_THREADS": "1",
    "REID_INFERENCE_WORKERS": "2",
    "REID_DECODE_WORKERS": "2",
}


# ------------------------------------------------------------------------------- the model


def export_random_model(directory: Path, version: str = "test-1", seed: int = 0) -> Path:
    """A randomly initialised ASTPN exported with its card; returns the .onnx path."""
    import torch

    from model.network import ASTPN
    from training.export import export_onnx

    torch.manual_seed(seed)
    network = ASTPN(variant="astpn", num_identities=0).eval()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "astpn-random.onnx"
    export_onnx(network, path, name="astpn-random", version=version)
    return path


def _export_key() -> str:
    """What the exported model depends on: the code of model/ and training/ and the versions
    of the exporting libraries."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "model").rglob("*.py")) + sorted((ROOT / "training").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    for package in ("torch", "onnx", "onnxscript", "onnxruntime"):
        digest.update(f"{package}={metadata.version(package)}".encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def exported_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The random model, exported once per version of the code that makes it: kept in
    pytest's cache (.pytest_cache), so the next run skips the export (about 10 s of torch).
    A cached model whose card no longer vouches for it is exported again; CI starts clean."""
    cache = request.config.cache
    if cache is None:  # -p no:cacheprovider
        return export_random_model(tmp_path_factory.mktemp("model"))
    folder = cache.mkdir(f"exported-model-{_export_key()}")
    path = folder / "astpn-random.onnx"
    try:
        verify_card(load_card(card_path_for(path)), path)
        return path
    except (OSError, CardError):
        pass
    fresh = export_random_model(tmp_path_factory.mktemp("model"))
    for item in sorted(fresh.parent.iterdir(), key=lambda p: p.suffix == ".json"):
        shutil.copyfile(item, folder / item.name)  # the card last: it marks the copy complete
    return path


# ------------------------------------------------------------------------------ the server


class ServiceProcess(bench.server.ServiceProcess):
    """The service in its own process, as deployed (:class:`bench.server.ServiceProcess`),
    with the suite's thread settings and an httpx client."""

    def __init__(
        self,
        model_path: Path,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        entry: str = "uvicorn",
    ) -> None:
        super().__init__(model_path, data_dir, {**SUITE_THREADS, **(env or {})}, entry=entry)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def service(
    exported_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The shared test server: auth off, small limits (SERVER_ENV), micro-batching on."""
    server = ServiceProcess(exported_model, tmp_path_factory.mktemp("shared") / "data", SERVER_ENV)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def service_client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with service.client() as client:
        yield client


# ------------------------------------------------------------------------------ test frames


def person_frames(seed: int, count: int = 6, size: tuple[int, int] = (96, 48)) -> list[np.ndarray]:
    """A walking 'person' (two colour blocks over a background) whose colours come from
    ``seed``: different seeds look very different, the same seed gives the same frames."""
    rng = np.random.default_rng(seed)
    height, width = size
    background, top, bottom = (rng.integers(0, 256, 3) for _ in range(3))
    texture = rng.integers(-12, 13, (height, width, 3))
    frames = []
    for t in range(count):
        image = np.empty((height, width, 3), np.int64)
        image[:] = background
        left = width // 6 + t % max(1, width // 4)
        right = left + width // 2
        image[height // 10 : height // 2, left:right] = top
        image[height // 2 : height * 9 // 10, left:right] = bottom
        frames.append(np.clip(image + texture, 0, 255).astype(np.uint8))
    return frames


def encode(image: np.ndarray, fmt: str = "png") -> bytes:
    """RGB, grey or RGBA array -> PNG/JPEG bytes."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, buffer = cv2.imencode(".png" if fmt == "png" else ".jpg", image)
    assert ok
    return buffer.tobytes()


def encoded_frames(seed: int, count: int = 6, fmt: str = "png") -> list[bytes]:
    return [encode(frame, fmt) for frame in person_frames(seed, count)]


def multipart_files(frames: Sequence[bytes], fmt: str = "png") -> list[tuple[str, tuple]]:
    mime = "image/png" if fmt == "png" else "image/jpeg"
    return [("frames", (f"{i:04d}.{fmt}", data, mime)) for i, data in enumerate(frames)]


def zip_archive(entries: Mapping[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def b64(frames: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(data).decode() for data in frames]


def gallery_count(client: httpx.Client) -> int:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    return int(response.json()["gallery"]["count"])


def enroll(
    client: httpx.Client,
    identity: str,
    seed: int,
    count: int = 6,
    **fields: str,
) -> dict:
    """Enroll ``person_frames(seed)`` as multipart PNG files; returns the 201 body."""
    response = client.post(
        "/tracklets",
        data={"identity": identity, **fields},
        files=multipart_files(encoded_frames(seed, count)),
    )
    assert response.status_code == 201, response.text
    return response.json()


def query(client: httpx.Client, seed: int, count: int = 6, **fields: object) -> dict:
    response = client.post("/query", json={"frames": b64(encoded_frames(seed, count)), **fields})
    assert response.status_code == 200, response.text
    return response.json()

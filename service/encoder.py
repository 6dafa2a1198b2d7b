"""Preprocessed tracklets -> embeddings, through ONNX Runtime (never torch).

The exported model (see docs/architecture.md) takes ``frames`` (B, T, 5, H, W) and gives both
self-pairing embeddings; the model card's ``roles`` says which one enrolment uses (``gallery``)
and which one queries use (``probe``), and its ``preprocessing`` record is the input spec
(:class:`model.preprocessing.InputSpec`) the service prepares frames with (``Encoder.spec``). The
card is checked before the model is trusted: a missing card, an ONNX file whose sha256 differs
from the card's, or a card whose preprocessing this code does not reproduce exactly is refused,
because every one of those would silently give wrong distances.

Long tracklets are evenly subsampled to ``max_embedded_frames`` before the network sees them
(after preprocessing, so optical flow is still computed between consecutive uploaded frames, as in
training). The network then gives one attention weight per *embedded* frame; every uploaded frame
is given the weight of the nearest embedded frame, divided by how many uploaded frames share that
embedded frame, so the API always answers one weight per uploaded frame and the weights still sum
to 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from model.card import (
    INPUT_NAME,
    OUTPUT_NAMES,
    ROLE_NAMES,
    CardError,
    PreprocessingMismatch,
    card_path_for,
    input_spec_of,
    load_card,
    verify_card,
)
from service.onnx_session import ArenaPolicy, ModelLoadError, open_session

__all__ = ["Embedded", "Encoder", "ModelLoadError", "frame_attention", "subsample_indices"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embedded:
    """What the network says about one tracklet, in the role it was embedded for."""

    embedding: np.ndarray  # float32 (D,)
    attention: np.ndarray  # float32 (T,), one weight per uploaded frame, sums to 1
    features: np.ndarray  # float32 (T', D), per embedded frame


#: Called after every ONNX Runtime call with (tracklets, frames, seconds).
RunObserver = Callable[[int, int, float], None]


def subsample_indices(length: int, cap: int) -> np.ndarray:
    """``cap`` evenly spaced frame indices out of ``length`` (all of them when it fits)."""
    if length <= cap:
        return np.arange(length)
    return np.round(np.linspace(0, length - 1, cap)).astype(np.int64)


def spread_attention(weights: np.ndarray, indices: np.ndarray, length: int) -> np.ndarray:
    """Embedded-frame weights -> one weight per uploaded frame (nearest embedded frame, shared
    equally among the uploaded frames that map to it), so the result still sums to 1."""
    if len(indices) == length:
        return weights.astype(np.float32)
    owner = np.abs(np.arange(length)[:, None] - indices[None, :]).argmin(axis=1)
    share = np.bincount(owner, minlength=len(indices)).astype(np.float64)
    return (weights[owner] / share[owner]).astype(np.float32)


def _batch(tracklets: Sequence[np.ndarray], chosen: Sequence[np.ndarray]) -> np.ndarray:
    """The network's (B, T', C, H, W) float32 input, copying only what must be copied: one
    whole contiguous tracklet is passed as it is, and a batch is stacked once, already float32
    (no fancy-indexed copy of a tracklet that keeps all its frames, no second copy to cast)."""
    if len(tracklets) == 1 and len(chosen[0]) == tracklets[0].shape[0]:
        return np.ascontiguousarray(tracklets[0], dtype=np.float32)[None]
    return np.stack(
        [x if len(c) == x.shape[0] else x[c] for x, c in zip(tracklets, chosen, strict=True)],
        dtype=np.float32,
    )


def frame_attention(weights: np.ndarray, num_frames: int) -> np.ndarray:
    """Attention over a tracklet's embedded frames -> one weight per uploaded frame.

    The embedded frames are the ones :func:`subsample_indices` picks out of ``num_frames`` for
    as many weights as there are, so this is right for any attention computed on them: the
    encoder's own, and the pair scorer's on features the gallery stored at enrolment.
    """
    chosen = subsample_indices(num_frames, len(weights))
    return spread_attention(weights, chosen, num_frames)


class Encoder:
    """One ONNX Runtime session and the model card that vouches for it. Thread-safe."""

    def __init__(
        self,
        model_path: Path,
        *,
        max_embedded_frames: int = 128,
        use_cuda: bool = True,
        intra_op_threads: int = 0,
        arena: ArenaPolicy | None = None,
        spin: bool = False,
        on_run: RunObserver | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.max_embedded_frames = max_embedded_frames
        #: Called after every ONNX Runtime call (the app feeds its metrics from it).
        self.on_run = on_run
        self.card = self._load_checked_card()
        self.name = str(self.card.get("name", self.model_path.stem))
        self.version = str(self.card["version"])
        self.variant = self.card.get("variant")
        self.embedding_size = int(self.card["embedding_size"])
        #: How uploaded frames become this model's input (checked by verify_card above).
        self.spec = input_spec_of(self.card)
        # load_card has checked that each role names "probe" or "gallery".
        self.roles: dict[str, str] = {role: str(self.card["roles"][role]) for role in ROLE_NAMES}
        self.available_providers = list(ort.get_available_providers())
        self.arena = arena if arena is not None else ArenaPolicy()
        self.session = open_session(self.model_path, use_cuda, intra_op_threads, self.arena, spin)
        self.provider = self.session.get_providers()[0]
        self._check_signature()
        log.info(
            "model %s version %s (%s) loaded from %s on %s",
            self.name,
            self.version,
            self.variant,
            self.model_path,
            self.provider,
        )

    # -- loading ---------------------------------------------------------------------------

    def _load_checked_card(self) -> dict[str, Any]:
        path = self.model_path
        if not path.is_file():
            raise ModelLoadError(
                f"model file {path} does not exist. Produce it from a trained checkpoint with "
                f"`python -m training export --checkpoint runs/<run>/best.pt --out {path}` "
                "(`--random-init` instead of `--checkpoint` gives an untrained model for smoke "
                "tests), or point REID_MODEL_PATH at an exported .onnx file"
            )
        card_path = card_path_for(path)
        if not card_path.is_file():
            raise ModelLoadError(
                f"model card {card_path} is missing: the service only serves a model with its "
                "card (it records the version, roles and preprocessing). Re-export the model "
                "with `python -m training export`, which writes the .onnx and .json together"
            )
        try:
            card = load_card(card_path)
        except (OSError, CardError) as exc:
            raise ModelLoadError(f"model card {card_path} is unusable: {exc}") from exc
        try:
            verify_card(card, path)
        except PreprocessingMismatch as exc:
            raise ModelLoadError(f"model {path} cannot be served by this code: {exc}") from exc
        except (OSError, CardError) as exc:
            raise ModelLoadError(
                f"model {path} does not match its card {card_path}: {exc}"
            ) from exc
        return card

    def _check_signature(self) -> None:
        inputs = {item.name: item for item in self.session.get_inputs()}
        outputs = {item.name for item in self.session.get_outputs()}
        missing = [name for name in OUTPUT_NAMES if name not in outputs]
        if INPUT_NAME not in inputs or missing:
            raise ModelLoadError(
                f"model {self.model_path} is not an exported ASTPN model: it needs input "
                f"{INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)} (missing: {missing})"
            )

    # -- inference -------------------------------------------------------------------------

    def embedded_length(self, length: int) -> int:
        """How many frames of a ``length``-frame tracklet the network sees."""
        return min(length, self.max_embedded_frames)

    def embed(self, tracklets: Sequence[np.ndarray], role: str | Sequence[str]) -> list[Embedded]:
        """Preprocessed tracklets (each float32 (T, 5, *spec.crop_size)) -> one
        :class:`Embedded` each.

        ``role`` is ``"enroll"`` or ``"query"`` (one for all, or one per tracklet). Tracklets of
        equal embedded length share one ONNX Runtime call; different lengths run separately,
        because padding would change the attention pooling.
        """
        roles = [role] * len(tracklets) if isinstance(role, str) else list(role)
        if len(roles) != len(tracklets):
            raise ValueError("one role per tracklet")
        for item in roles:
            if item not in ROLE_NAMES:
                raise ValueError(f"unknown role {item!r}: use one of {ROLE_NAMES}")
        indices = []
        for x in tracklets:
            expected = (len(self.spec.channels), *self.spec.crop_size)
            if x.ndim != 4 or x.shape[1:] != expected or x.shape[0] == 0:
                raise ValueError(
                    f"expected a (T, {', '.join(map(str, expected))}) array, got {x.shape}"
                )
            indices.append(subsample_indices(x.shape[0], self.max_embedded_frames))

        groups: dict[int, list[int]] = {}
        for position, chosen in enumerate(indices):
            groups.setdefault(len(chosen), []).append(position)
        results: list[Embedded | None] = [None] * len(tracklets)
        for length, group in groups.items():
            for members in self.arena.calls(group, length):
                self._embed_call(tracklets, indices, roles, members, results)
        return [item for item in results if item is not None]

    def _embed_call(
        self,
        tracklets: Sequence[np.ndarray],
        indices: list[np.ndarray],
        roles: list[str],
        members: list[int],
        results: list[Embedded | None],
    ) -> None:
        """One ONNX Runtime call on ``members`` (tracklets of one embedded length)."""
        batch = _batch([tracklets[i] for i in members], [indices[i] for i in members])
        outputs = self._run(batch)
        for row, i in enumerate(members):
            which = self.roles[roles[i]]
            results[i] = Embedded(
                embedding=outputs[f"embedding_{which}"][row].astype(np.float32),
                attention=frame_attention(
                    outputs[f"attention_{which}"][row], tracklets[i].shape[0]
                ),
                features=outputs["features"][row].astype(np.float32),
            )

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        options = self.arena.run_options(batch.shape[0] * batch.shape[1])
        values = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch}, options)
        if self.on_run is not None:
            self.on_run(
                batch.shape[0], batch.shape[0] * batch.shape[1], time.perf_counter() - start
            )
        return dict(zip(OUTPUT_NAMES, values, strict=True))

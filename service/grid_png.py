"""The ranked-results picture (torchreid's ``visualize_ranked_results`` layout): one row per
query, its most attended frame with the attention of every frame as bars, then its matches best
first, each shown by its most attended thumbnail and framed green when it is the query's person,
red when not (grey when nobody knows who the query is). OpenCV only: the base install has it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Verdict = Literal["query", "correct", "wrong", "unknown"]

IMAGE_H, IMAGE_W = 128, 64
BORDER = 4
CELL_W = IMAGE_W + 2 * BORDER
BARS_H = 18
CAPTION_H = 30
GAP = 6
QUERY_GAP = 18
MARGIN = 10
#: Frame colours (BGR, as OpenCV writes).
COLOURS: dict[Verdict, tuple[int, int, int]] = {
    "query": (121, 78, 31),
    "correct": (62, 142, 30),
    "wrong": (37, 48, 217),
    "unknown": (180, 180, 180),
}
PADDING = (242, 239, 236)
INK = (42, 35, 29)


@dataclass
class Cell:
    image: np.ndarray | None  # RGB uint8, any size; None: no thumbnail was kept
    lines: Sequence[str]  # at most two caption lines
    verdict: Verdict


@dataclass
class GridRow:
    query: Cell
    attention: np.ndarray  # the query's weights, one per frame
    matches: Sequence[Cell]


def _fit(image: np.ndarray | None) -> np.ndarray:
    """The image scaled into IMAGE_H x IMAGE_W (aspect kept, padded), BGR."""
    canvas = np.full((IMAGE_H, IMAGE_W, 3), PADDING, np.uint8)
    if image is None:
        _text(canvas, "no", (IMAGE_W // 2 - 8, IMAGE_H // 2 - 4))
        _text(canvas, "thumbnail", (4, IMAGE_H // 2 + 10))
        return canvas
    height, width = image.shape[:2]
    scale = min(IMAGE_H / height, IMAGE_W / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    top, left = (IMAGE_H - size[1]) // 2, (IMAGE_W - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = cv2.cvtColor(resized, cv2.COLOR_RGB2BGR)
    return canvas


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int]) -> None:
    # Hershey fonts draw ASCII only.
    ascii_text = text.encode("ascii", "replace").decode("ascii")
    cv2.putText(canvas, ascii_text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.33, INK, 1, cv2.LINE_AA)


def _cell(canvas: np.ndarray, cell: Cell, x: int, y: int) -> None:
    cv2.rectangle(
        canvas, (x, y), (x + CELL_W - 1, y + IMAGE_H + 2 * BORDER - 1), COLOURS[cell.verdict], -1
    )
    canvas[y + BORDER : y + BORDER + IMAGE_H, x + BORDER : x + BORDER + IMAGE_W] = _fit(cell.image)


def _captions(canvas: np.ndarray, lines: Sequence[str], x: int, y: int) -> None:
    for i, line in enumerate(lines[:2]):
        _text(canvas, line[:14], (x, y + 11 + 13 * i))


def _bars(canvas: np.ndarray, weights: np.ndarray, x: int, y: int) -> None:
    """One bar per frame across the cell's width, heights relative to the largest weight."""
    largest = float(weights.max()) if weights.size else 0.0
    width = CELL_W / max(1, weights.size)
    for i, weight in enumerate(weights):
        height = max(1, round((BARS_H - 4) * float(weight) / (largest or 1.0)))
        left, right = (
            round(x + i * width),
            max(round(x + i * width) + 1, round(x + (i + 1) * width) - 1),
        )
        cv2.rectangle(
            canvas, (left, y + BARS_H - 2 - height), (right - 1, y + BARS_H - 3), (216, 125, 59), -1
        )


def draw_grid(rows: Sequence[GridRow]) -> np.ndarray:
    """The picture (BGR, for ``cv2.imwrite``)."""
    columns = max((len(row.matches) for row in rows), default=0)
    row_h = IMAGE_H + 2 * BORDER + BARS_H + CAPTION_H + GAP
    width = 2 * MARGIN + CELL_W + QUERY_GAP + columns * (CELL_W + GAP)
    canvas = np.full((2 * MARGIN + max(1, len(rows)) * row_h, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = MARGIN + r * row_h
        _cell(canvas, row.query, MARGIN, y)
        _bars(canvas, np.asarray(row.attention, np.float64), MARGIN, y + IMAGE_H + 2 * BORDER)
        _captions(canvas, row.query.lines, MARGIN, y + IMAGE_H + 2 * BORDER + BARS_H)
        for c, match in enumerate(row.matches):
            x = MARGIN + CELL_W + QUERY_GAP + c * (CELL_W + GAP)
            _cell(canvas, match, x, y)
            _captions(canvas, match.lines, x, y + IMAGE_H + 2 * BORDER + BARS_H)
    return canvas

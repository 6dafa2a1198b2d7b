"""Dense pyramidal Lucas-Kanade optical flow on OpenCV primitives (NumPy + OpenCV, no torch).

``model/preprocessing.py`` runs it between consecutive frames of a tracklet (the flow channels
of the ``lucas-kanade`` input); the measurements behind every setting are in
docs/preprocessing.md.
"""

from __future__ import annotations

import cv2
import numpy as np

# Flow displacement (64x48 pixels) that maps to +-1. Fixed, not per sequence, so a flow value means
# the same speed in every tracklet; 8 px is also about where the 3-level pyramid stops being able
# to measure displacements at all, so clipping discards nothing measurable.
FLOW_SCALE_PX = 8.0

# Dense Lucas-Kanade settings (measurements behind them: docs/preprocessing.md).
FLOW_LEVELS = 3  # 64x48, 32x24, 16x12: captures ~4x the single-level range
FLOW_ITERATIONS = 2  # warp-and-solve passes per pyramid level
FLOW_WINDOW = 9  # Gaussian window side (pixels at every level)
FLOW_WINDOW_SIGMA = 2.0
# Tikhonov term added to both diagonal entries of the 2x2 structure tensor, in (intensity/pixel)^2
# with intensities in [0, 1]: gradients weaker than about one grey level per pixel count as noise.
FLOW_REGULARISER = (1.0 / 255.0) ** 2


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Only a handful of shapes ever occur (one per pyramid level), so caching them saves
    # re-allocating two meshgrids per level for every frame pair.
    grid = _GRIDS.get((h, w))
    if grid is None:
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        gx.setflags(write=False)  # shared between calls (and threads): never modified
        gy.setflags(write=False)
        grid = (gx, gy)
        _GRIDS[(h, w)] = grid
    return grid


def _pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    pyr = [img]
    for _ in range(levels - 1):
        prev = pyr[-1]
        # 2x2 averaging: its sample centres (2i + 0.5) match cv2.resize's when the flow is
        # upsampled again, and it is mirror-symmetric for even sizes (pyrDown, which samples at
        # 2i, is not), so the flow of mirrored frames is the mirrored flow, up to rounding.
        pyr.append(
            cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA)
        )
    return pyr


def lucas_kanade_flow(
    prev: np.ndarray,
    curr: np.ndarray,
    *,
    levels: int = FLOW_LEVELS,
    iterations: int = FLOW_ITERATIONS,
    window: int = FLOW_WINDOW,
    window_sigma: float = FLOW_WINDOW_SIGMA,
    regulariser: float = FLOW_REGULARISER,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense optical flow from ``prev`` to ``curr`` (2-D float32 images, same shape).

    Returns (flow_x, flow_y) in pixels, sampled on ``curr``'s grid: ``curr(x) ~ prev(x - d(x))``,
    so positive flow_x means the content moved right. Coarse-to-fine: each level starts from the
    doubled flow of the coarser one, warps ``prev`` by it (cv2.remap) and solves the windowed
    2x2 Lucas-Kanade system for the remaining displacement. The defaults are the values
    ``preprocess_frames`` uses; the keywords exist for measuring alternatives.
    """
    if prev.shape != curr.shape or prev.ndim != 2:
        raise ValueError(f"flow needs two 2-D images of one shape, got {prev.shape}, {curr.shape}")
    prev = np.ascontiguousarray(prev, dtype=np.float32)
    curr = np.ascontiguousarray(curr, dtype=np.float32)
    if levels > 1 and (prev.shape[0] >> (levels - 1) < 2 or prev.shape[1] >> (levels - 1) < 2):
        raise ValueError(f"image {prev.shape} too small for {levels} pyramid levels")
    prev_pyr = _pyramid(prev, levels)
    curr_pyr = _pyramid(curr, levels)
    ksize = (window, window)
    fx: np.ndarray | None = None
    fy: np.ndarray | None = None
    for level in range(levels - 1, -1, -1):
        p, c = prev_pyr[level], curr_pyr[level]
        h, w = p.shape
        gx, gy = _pixel_grid(h, w)
        if fx is None or fy is None:
            fx = np.zeros((h, w), np.float32)
            fy = np.zeros((h, w), np.float32)
            moved = False
        else:
            fx = cv2.resize(fx, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(2.0)
            fy = cv2.resize(fy, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(2.0)
            moved = True
        # Gradients of the fixed image (curr): the 2x2 structure tensor and its inverse are then
        # computed once per level, and each iteration only re-warps prev and blurs two products.
        # Measured more accurate than re-deriving gradients from the warped image each pass
        # (docs/preprocessing.md) as well as cheaper.
        ix = cv2.Scharr(c, cv2.CV_32F, 1, 0, scale=1.0 / 32.0)
        iy = cv2.Scharr(c, cv2.CV_32F, 0, 1, scale=1.0 / 32.0)
        sxx, sxy, syy = cv2.split(
            cv2.GaussianBlur(cv2.merge([ix * ix, ix * iy, iy * iy]), ksize, window_sigma)
        )
        # Tikhonov term on the diagonal: both eigenvalues >= regulariser, so det > 0 everywhere
        # and textureless windows get a (near) zero update instead of a division by ~0.
        sxx += np.float32(regulariser)
        syy += np.float32(regulariser)
        inv_det = np.float32(1.0) / (sxx * syy - sxy * sxy)
        axx, axy, ayy = syy * inv_det, -sxy * inv_det, sxx * inv_det
        for _ in range(iterations):
            warped = (
                cv2.remap(p, gx - fx, gy - fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                if moved
                else p
            )
            # curr(x) ~ warped(x - u) ~ warped(x) - grad . u  =>  grad . u = warped - curr
            it = warped - c
            sxt, syt = cv2.split(
                cv2.GaussianBlur(cv2.merge([ix * it, iy * it]), ksize, window_sigma)
            )
            fx += axx * sxt + axy * syt
            fy += axy * sxt + ayy * syt
            moved = True
    assert fx is not None and fy is not None
    return fx, fy

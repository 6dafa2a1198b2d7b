"""Camera sites: the place a camera watches (a wide static panorama) and how the camera sees.

A site is one fixed camera: every tracklet from that camera crops a different stretch of the
same panorama (as in i-LIDS-VID, where all cam1 crops come from one airport view), and every
tracklet shares the camera's colour cast, exposure, optics, noise and compression, with small
per-tracklet variation (passing clouds, auto-exposure). The panorama's geometry is a simple
ground plane: a horizon row, a wall whose base sits on the floor, and a reference row where a
person of ``REF_HEIGHT`` pixels stands; a person higher up in the image is farther away and
proportionally smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from training.synthetic.body import PersonPose, render_person
from training.synthetic.person import sample_person

PANORAMA_SHAPE = (340, 2000)  # (H, W) scene pixels
REF_HEIGHT = 100.0  # stature in scene pixels of a person standing on REF_ROW
REF_ROW = 250.0
SITE_KINDS = ("hall", "corridor", "street", "garage")


@dataclass(frozen=True)
class CameraModel:
    """How a camera renders light into pixels (all factors multiply linear-ish sRGB in [0,1])."""

    exposure: float
    white_balance: tuple[float, float, float]
    saturation: float
    contrast: float
    gamma: float
    black_lift: float
    defocus: float  # Gaussian sigma in output pixels
    resolution: float  # the sensor's real resolution relative to the 128x64 crop
    noise: float  # sensor noise sigma, fraction of full scale
    chroma_noise: float  # share of the noise that is per-channel
    jpeg_quality: tuple[int, int]  # range per tracklet
    interlaced: bool
    person_fraction: tuple[float, float]  # stature / crop height, range per tracklet
    light_side: float

    def summary(self) -> dict:
        return {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in self.__dict__.items()
            if not isinstance(v, tuple)
        } | {
            "white_balance": [round(c, 3) for c in self.white_balance],
            "jpeg_quality": list(self.jpeg_quality),
            "person_fraction": [round(c, 3) for c in self.person_fraction],
        }


@dataclass
class CameraSite:
    """One camera: its scene panorama, ground-plane geometry and camera model."""

    camera: int
    kind: str
    panorama: np.ndarray  # float32 (H, W, 3) RGB in [0, 1], already lit and defocused
    illumination: np.ndarray  # float32 (H, W) light field, multiplies persons walking there
    horizon: float  # image row of the horizon (persons shrink to zero there)
    wall_base: float  # image row where the back wall meets the floor
    model: CameraModel
    info: dict = field(default_factory=dict)

    def scale_at(self, row: float) -> float:
        """Stature in scene pixels of a person whose feet are on `row`."""
        return REF_HEIGHT * (row - self.horizon) / (REF_ROW - self.horizon)

    def row_for(self, stature_px: float) -> float:
        return self.horizon + stature_px / REF_HEIGHT * (REF_ROW - self.horizon)


# ----------------------------------------------------------------------------- palettes

_WALLS = {
    "hall": ["#c9c2b4", "#d6d3cc", "#b8b2a6", "#a9aeb3", "#cfc6b0", "#8e969c"],
    "corridor": ["#a7a08e", "#c0bfb6", "#8d918c", "#b59c84", "#d0cbbf", "#7c8488"],
    "street": ["#8b5a46", "#a3998a", "#7b7468", "#b9ad97", "#6f6a63", "#9a7c62"],
    "garage": ["#8c8c88", "#9a968c", "#7a7b7d", "#a6a39a"],
}
_FLOORS = {
    "hall": ["#bdb4a4", "#cfc9bd", "#9c968c", "#8a7f70", "#d8d4ca"],
    "corridor": ["#8f8a80", "#a39b8b", "#6e6a64", "#b3ab9c"],
    "street": ["#7d7a75", "#8e877c", "#5f5d5a", "#a09a8f"],
    "garage": ["#6f6e6a", "#807d76", "#5c5b58"],
}
_SIGNS = ["#d9b534", "#2f4f8f", "#b83a2e", "#2e7a4a", "#e0e0d8", "#1d1d1d", "#c46a1f", "#6a3d8a"]


def _hex(code: str) -> np.ndarray:
    v = int(code.lstrip("#"), 16)
    return np.array([(v >> 16) & 255, (v >> 8) & 255, v & 255], np.float32) / 255.0


def _vary(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(colour * (1 + rng.normal(0, amount)) + rng.normal(0, amount * 0.3, 3), 0, 1)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]):
    """Low-frequency noise in [-1, 1]: random values on a coarse grid, bicubic-upsampled."""
    coarse = rng.uniform(-1, 1, size=(cells[0] + 1, cells[1] + 1)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _rect(img: np.ndarray, x0, y0, x1, y1, colour) -> None:
    cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), tuple(float(c) for c in colour), -1)


# ----------------------------------------------------------------------------- scene building


def _draw_floor(rng, img, horizon, wall_base, kind) -> None:
    h, w = img.shape[:2]
    base = _hex(str(rng.choice(_FLOORS[kind])))
    y0 = int(wall_base)
    img[y0:] = base
    rows = np.arange(h, dtype=np.float32)[y0:, None]
    # Floors are shinier / lighter far away (grazing reflection) and darker close by.
    img[y0:] *= (1.08 - 0.16 * (rows - y0) / max(h - y0, 1))[..., None]
    img[y0:] *= (1.0 + 0.06 * _smooth_noise(rng, (h - y0, w), (4, 30)))[..., None]
    for _ in range(int(w / 40)):  # stains, worn patches, drain covers
        cx, cy = rng.uniform(0, w), rng.uniform(wall_base, h)
        axes = (int(rng.uniform(4, 30)), int(rng.uniform(2, 8)))
        shade = tuple(map(float, base * rng.uniform(0.75, 1.15)))
        cv2.ellipse(img, (int(cx), int(cy)), axes, 0, 0, 360, shade, -1)
    if rng.random() < 0.5:  # painted guide lines (yellow/white) along the walkway
        y = rng.uniform(wall_base + 10, h - 10)
        col = tuple(map(float, _hex(str(rng.choice(["#c9a83a", "#d8d6cf"])))))
        cv2.line(img, (0, int(y)), (w, int(y)), col, int(rng.integers(2, 5)))
    line = base * rng.uniform(0.55, 0.75)
    style = rng.choice(
        ["tiles", "tiles", "plain", "slabs"] if kind != "street" else ["slabs", "plain"]
    )
    if style == "plain":
        return
    tile = rng.uniform(0.25, 0.6) * REF_HEIGHT
    span = REF_ROW - horizon
    # Horizontal joints: equal steps in depth are shrinking steps in image rows.
    step = tile / REF_HEIGHT
    inv = (REF_ROW - horizon) / max(wall_base - horizon, 1.0)
    k = 1.0 / inv
    while True:
        row = horizon + span * k
        if row > h:
            break
        if row >= wall_base:
            cv2.line(
                img,
                (0, int(row * 8)),
                (w * 8, int(row * 8)),
                tuple(map(float, line)),
                1,
                cv2.LINE_AA,
                3,
            )
        k = 1.0 / max(1.0 / k - step * 0.6, 1e-3)
        if k > 50:
            break
    # Joints running away from the camera converge on a vanishing point (slope capped so a
    # wide panorama does not fan out absurdly).
    vx = w / 2 + rng.uniform(-200, 200)
    spacing = tile * (1.0 if style == "tiles" else 1.6)
    x = -w * 0.5
    while x < w * 1.5:
        slope = float(np.clip((x - vx) / span, -1.5, 1.5))
        xa = x + slope * (wall_base - REF_ROW)
        xb = x + slope * (h - REF_ROW)
        cv2.line(
            img,
            (int(xa * 8), int(wall_base * 8)),
            (int(xb * 8), int(h * 8)),
            tuple(map(float, line)),
            1,
            cv2.LINE_AA,
            3,
        )
        x += spacing


def _draw_wall(rng, img, horizon, wall_base, kind) -> list[tuple[int, int]]:
    """Wall segments along the panorama; returns the x-ranges of pillars (drawn nearer)."""
    w = img.shape[1]
    wb = int(wall_base)
    palette = _WALLS[kind]
    x = 0
    pillars = []
    while x < w:
        seg = int(rng.uniform(35, 180))
        colour = _vary(rng, _hex(str(rng.choice(palette))), 0.07)
        _rect(img, x, 0, x + seg, wb, colour)
        choice = rng.choice(
            ["plain", "window", "shop", "door", "poster", "panels", "tiles", "vending"]
            if kind in ("hall", "corridor")
            else ["facade", "facade", "shop", "door", "plain"]
            if kind == "street"
            else ["plain", "panels", "door"]
        )
        top = rng.uniform(0, wb * 0.4)
        if choice == "window":
            glass = _vary(rng, _hex(rng.choice(["#9fb3c4", "#56636e", "#c7d3da", "#2f3b45"])), 0.1)
            _rect(img, x + 6, top, x + seg - 6, wb - 8, glass)
            for mx in np.arange(x + 6, x + seg - 6, rng.uniform(25, 50)):
                _rect(img, mx, top, mx + 3, wb - 8, colour * 0.6)
            streak = glass * 1.25
            for _ in range(3):  # reflections
                sx = rng.uniform(x, x + seg)
                cv2.line(
                    img,
                    (int(sx), int(top)),
                    (int(sx + 30), int(wb - 8)),
                    tuple(map(float, np.clip(streak, 0, 1))),
                    int(rng.integers(2, 7)),
                )
        elif choice == "shop":
            inside = _vary(rng, _hex(rng.choice([*_SIGNS, "#e8e0c8", "#f0e6d0"])), 0.15)
            _rect(img, x + 4, top + 18, x + seg - 4, wb - 4, inside * 0.9 + 0.1)
            for _ in range(int(rng.integers(3, 9))):  # goods / shelves
                gx, gy = rng.uniform(x + 4, x + seg - 10), rng.uniform(top + 22, wb - 10)
                _rect(
                    img,
                    gx,
                    gy,
                    gx + rng.uniform(4, 20),
                    gy + rng.uniform(3, 12),
                    _vary(rng, _hex(str(rng.choice(_SIGNS))), 0.2),
                )
            _rect(img, x, top, x + seg, top + 16, _hex(str(rng.choice(_SIGNS))))
        elif choice == "door":
            dw = rng.uniform(30, 50)
            dx = x + rng.uniform(0, max(seg - dw, 1))
            _rect(img, dx, wb - REF_HEIGHT * 0.55, dx + dw, wb, colour * rng.uniform(0.4, 0.7))
        elif choice == "poster":
            for _ in range(int(rng.integers(1, 4))):
                px, py = rng.uniform(x, x + seg - 30), rng.uniform(top, wb - 50)
                pw, ph = rng.uniform(15, 40), rng.uniform(20, 45)
                _rect(img, px, py, px + pw, py + ph, _hex(str(rng.choice(_SIGNS))))
                for ly in np.arange(py + 4, py + ph - 3, 5):
                    _rect(
                        img,
                        px + 3,
                        ly,
                        px + pw * rng.uniform(0.4, 0.9),
                        ly + 1.5,
                        _hex(str(rng.choice(_SIGNS))),
                    )
        elif choice == "panels":
            step = rng.uniform(12, 40)
            for px in np.arange(x, x + seg, step):
                cv2.line(img, (int(px), 0), (int(px), wb), tuple(map(float, colour * 0.8)), 1)
        elif choice == "tiles":
            step = rng.uniform(5, 12)
            grout = tuple(map(float, colour * 0.82))
            for py in np.arange(top, wb, step):
                cv2.line(img, (x, int(py)), (x + seg, int(py)), grout, 1)
            for px in np.arange(x, x + seg, step):
                cv2.line(img, (int(px), int(top)), (int(px), wb), grout, 1)
        elif choice == "vending":
            vw = rng.uniform(18, 30)
            vx = x + rng.uniform(0, max(seg - vw, 1))
            _rect(img, vx, wb - 55, vx + vw, wb, _vary(rng, _hex(str(rng.choice(_SIGNS))), 0.1))
            _rect(img, vx + 3, wb - 50, vx + vw - 3, wb - 22, (0.85, 0.88, 0.9))
            for ly in np.arange(wb - 48, wb - 24, 5):
                for lx in np.arange(vx + 4, vx + vw - 5, 4):
                    _rect(img, lx, ly, lx + 2, ly + 3, _hex(str(rng.choice(_SIGNS))))
        elif choice == "facade":
            cols, gap = rng.uniform(18, 30), rng.uniform(25, 45)
            win = _vary(rng, _hex(rng.choice(["#39424a", "#59646c", "#8a9aa6", "#2a2a2c"])), 0.1)
            for wy in np.arange(top + 5, wb - 40, gap):
                for wx in np.arange(x + 5, x + seg - cols, cols + 8):
                    _rect(img, wx, wy, wx + cols, wy + gap * 0.6, win)
        # skirting board where the wall meets the floor
        _rect(img, x, wb - 4, x + seg, wb, colour * 0.7)
        if rng.random() < 0.3:  # a handrail or a glass balustrade along the wall
            ry = wb - rng.uniform(18, 30)
            cv2.line(img, (x, int(ry)), (x + seg, int(ry)), tuple(map(float, colour * 0.55)), 2)
        if kind != "street" and rng.random() < 0.25:
            pw = int(rng.uniform(20, 40))
            pillars.append((x + seg - pw // 2, pw))
        x += seg
    # Signs hanging from the ceiling (airports, stations).
    if kind in ("hall", "corridor"):
        for _ in range(int(w / 250)):
            sx, sy = rng.uniform(0, w), rng.uniform(0, max(horizon, 30))
            sw = rng.uniform(40, 110)
            col = _hex(str(rng.choice(["#d9b534", "#1d1d1d", "#2f4f8f"])))
            _rect(img, sx, sy, sx + sw, sy + 14, col)
            for lx in np.arange(sx + 5, sx + sw - 8, 9):
                _rect(
                    img, lx, sy + 4, lx + 6, sy + 10, (0.1,) * 3 if col.mean() > 0.5 else (0.9,) * 3
                )
    return pillars


def _draw_props(rng, img, horizon, wall_base, kind, pillars) -> None:
    w = img.shape[1]
    for px, pw in pillars:  # pillars stand a bit in front of the wall: reach lower
        foot = wall_base + rng.uniform(5, 40)
        base = _vary(rng, _hex(str(rng.choice(_WALLS[kind]))), 0.08)
        for i in range(pw):
            shade = 0.75 + 0.35 * math.sin(math.pi * (i + 0.5) / pw)
            img[: int(foot), int(px - pw / 2 + i) % w] = base * shade
    for _ in range(int(w / 70)):
        kind_prop = rng.choice(
            ["plant", "bin", "bench", "car", "tree", "barrier", "suitcase", "sign", "trolley"]
        )
        if kind in ("hall", "corridor") and kind_prop in ("car", "tree"):
            kind_prop = "plant"
        x = rng.uniform(0, w)
        y = rng.uniform(wall_base + 2, wall_base + 80)
        s = (y - horizon) / (REF_ROW - horizon)
        if kind_prop == "plant":
            _rect(img, x - 8 * s, y - 14 * s, x + 8 * s, y, _hex("#6b5a4a"))
            for _ in range(6):
                cx, cy = x + rng.normal(0, 7 * s), y - 14 * s - abs(rng.normal(14, 8)) * s
                green = _vary(rng, _hex("#3d5e35"), 0.2)
                cv2.circle(
                    img, (int(cx), int(cy)), max(2, int(8 * s)), tuple(map(float, green)), -1
                )
        elif kind_prop == "bin":
            _rect(img, x - 6 * s, y - 22 * s, x + 6 * s, y, _vary(rng, _hex("#4a4d50"), 0.2))
        elif kind_prop == "bench":
            _rect(
                img, x - 30 * s, y - 12 * s, x + 30 * s, y - 8 * s, _vary(rng, _hex("#6d5a45"), 0.2)
            )
            _rect(img, x - 28 * s, y - 8 * s, x - 25 * s, y, (0.2, 0.2, 0.2))
            _rect(img, x + 25 * s, y - 8 * s, x + 28 * s, y, (0.2, 0.2, 0.2))
        elif kind_prop == "car":
            col = _vary(
                rng,
                _hex(str(rng.choice(["#2b2b2e", "#b8b8b4", "#5b1f22", "#1f2f4f", "#8a8d90"]))),
                0.1,
            )
            _rect(img, x - 55 * s, y - 22 * s, x + 55 * s, y - 6 * s, col)
            _rect(img, x - 30 * s, y - 36 * s, x + 28 * s, y - 22 * s, col * 0.9)
            _rect(img, x - 27 * s, y - 34 * s, x + 25 * s, y - 23 * s, (0.15, 0.17, 0.2))
            for wx in (-35, 35):
                cv2.circle(
                    img, (int(x + wx * s), int(y - 6 * s)), max(2, int(8 * s)), (0.08,) * 3, -1
                )
        elif kind_prop == "tree":
            _rect(img, x - 3 * s, y - 60 * s, x + 3 * s, y, _hex("#4a3a2c"))
            for _ in range(10):
                cx, cy = x + rng.normal(0, 18 * s), y - 70 * s + rng.normal(0, 15 * s)
                green = _vary(rng, _hex("#405a34"), 0.25)
                cv2.circle(
                    img, (int(cx), int(cy)), max(3, int(14 * s)), tuple(map(float, green)), -1
                )
        elif kind_prop == "suitcase":
            col = _vary(
                rng, _hex(str(rng.choice(["#1d1d1f", "#3a4a6a", "#7a2a2a", "#9a9a96"]))), 0.1
            )
            _rect(img, x - 7 * s, y - 20 * s, x + 7 * s, y, col)
            _rect(img, x - 1 * s, y - 28 * s, x + 1 * s, y - 20 * s, (0.2, 0.2, 0.2))
        elif kind_prop == "sign":  # wet-floor A-frame
            pts = np.array([[x - 6 * s, y], [x, y - 22 * s], [x + 6 * s, y]], np.int32)
            cv2.fillConvexPoly(img, pts, (0.85, 0.72, 0.15))
        elif kind_prop == "trolley":
            col = (0.55, 0.56, 0.58)
            _rect(img, x - 14 * s, y - 18 * s, x + 14 * s, y - 16 * s, col)
            _rect(img, x - 14 * s, y - 18 * s, x - 12 * s, y, col)
            _rect(img, x + 12 * s, y - 30 * s, x + 14 * s, y, col)
            _rect(
                img,
                x - 10 * s,
                y - 14 * s,
                x + 10 * s,
                y - 4 * s,
                _vary(rng, _hex(str(rng.choice(_SIGNS))), 0.2),
            )
        else:  # barrier / railing
            col = _vary(rng, _hex(str(rng.choice(["#9a9a96", "#c9a63a", "#3b3b3d"]))), 0.1)
            _rect(img, x - 40 * s, y - 24 * s, x + 40 * s, y - 21 * s, col)
            for bx in np.arange(x - 40 * s, x + 40 * s, 10 * s):
                _rect(img, bx, y - 24 * s, bx + 2 * s, y, col * 0.8)


def _draw_bystanders(rng, img, horizon, wall_base, count: int) -> None:
    """Far-away people standing or walking in the scene (frozen in the panorama)."""
    h, w = img.shape[:2]
    for i in range(count):
        person = sample_person(rng, -1 - i)
        row = rng.uniform(wall_base + 3, REF_ROW + 40)
        stature = REF_HEIGHT * (row - horizon) / (REF_ROW - horizon) * person.body.height
        x = rng.uniform(0, w)
        ph, pw = int(stature * 1.15) + 4, int(stature * 0.7) + 4
        x0, y0 = int(x - pw / 2), int(row - stature * 1.08)
        if x0 < 0 or x0 + pw > w or y0 < 0 or y0 + ph > h:
            continue
        pose = PersonPose(
            phase=float(rng.uniform(0, 2 * math.pi)),
            yaw=float(rng.choice([0, 45, 90, 135, 180, -45, -90, -135])),
            feet_x=pw / 2 + (x - int(x)),
            feet_y=row - y0,
            height_px=stature / person.body.height,
        )
        rgb, alpha = render_person(person, pose, (ph, pw))
        region = img[y0 : y0 + ph, x0 : x0 + pw]
        region[:] = rgb * alpha[..., None] + region * (1 - alpha[..., None])


def _floor_reflection(rng, img: np.ndarray, wall_base: float) -> None:
    """Polished floors mirror the wall, blurred and fading with distance from it."""
    h = img.shape[0]
    wb = int(wall_base)
    depth = min(wb, h - wb)
    mirrored = img[wb - depth : wb][::-1]
    mirrored = cv2.GaussianBlur(mirrored, (0, 0), sigmaX=2.0, sigmaY=5.0)
    fade = rng.uniform(0.15, 0.35) * np.exp(-np.arange(depth, dtype=np.float32) / (depth * 0.4))
    region = img[wb : wb + depth]
    region[:] = region * (1 - fade[:, None, None]) + mirrored * fade[:, None, None]


def _lighting(rng, shape, horizon, kind) -> np.ndarray:
    """A smooth light field: ceiling lamps indoors, patches of sun and shade outdoors."""
    h, w = shape
    field_ = np.ones(shape, np.float32)
    field_ *= 1.0 + 0.18 * _smooth_noise(rng, shape, (3, 12))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind in ("hall", "corridor", "garage"):
        for x in np.arange(rng.uniform(0, 200), w, rng.uniform(150, 350)):
            y = rng.uniform(horizon, REF_ROW)
            sigma = rng.uniform(60, 140)
            field_ += rng.uniform(0.1, 0.35) * np.exp(
                -((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)
            )
    else:
        shade = _smooth_noise(rng, shape, (2, 8)) > rng.uniform(-0.2, 0.3)
        field_ *= np.where(shade, 1.0, rng.uniform(0.55, 0.75)).astype(np.float32)
        field_ = cv2.GaussianBlur(field_, (0, 0), 6)
    return field_ / float(np.median(field_))


def _camera_model(rng: np.random.Generator, kind: str) -> CameraModel:
    wb = np.exp(np.clip(rng.normal(0.0, 0.05, 3), -0.09, 0.09))
    wb = wb / wb[1]
    # Indoor sodium/fluorescent light pushes hard towards yellow-green or blue.
    if kind in ("garage", "corridor") and rng.random() < 0.6:
        wb = wb * np.array([1.05, 1.02, 0.88])
    q_lo = int(rng.integers(30, 70))
    frac = float(rng.uniform(0.76, 0.86))
    return CameraModel(
        exposure=float(np.exp(np.clip(rng.normal(0.0, 0.12), -0.2, 0.2))),  # metering bias
        white_balance=(float(wb[0]), float(wb[1]), float(wb[2])),
        saturation=float(rng.uniform(0.8, 1.1)),
        contrast=float(rng.uniform(0.8, 1.1)),
        gamma=float(np.exp(np.clip(rng.normal(0.0, 0.08), -0.15, 0.15))),
        black_lift=float(rng.uniform(0.0, 0.05)),
        defocus=float(rng.uniform(0.3, 0.9)),
        resolution=float(rng.uniform(0.45, 0.85)),
        noise=float(rng.uniform(0.006, 0.025)),
        chroma_noise=float(rng.uniform(0.2, 0.6)),
        jpeg_quality=(q_lo, q_lo + int(rng.integers(5, 25))),
        interlaced=bool(rng.random() < 0.35),
        person_fraction=(frac - 0.06, min(frac + 0.06, 0.95)),
        light_side=float(rng.uniform(-1.0, 1.0)),
    )


def build_site(rng: np.random.Generator, camera: int) -> CameraSite:
    """Build one camera's site; deterministic given the generator's state."""
    kind = str(rng.choice(SITE_KINDS))
    h, w = PANORAMA_SHAPE
    horizon = float(rng.uniform(-60.0, 60.0))  # elevated cameras: often above the frame
    wall_base = float(rng.uniform(max(horizon + 45.0, 135.0), 225.0))
    img = np.zeros((h, w, 3), np.float32)
    pillars = _draw_wall(rng, img, horizon, wall_base, kind)
    _draw_floor(rng, img, horizon, wall_base, kind)
    _draw_props(rng, img, horizon, wall_base, kind, pillars)
    if kind != "street" and rng.random() < 0.7:
        _floor_reflection(rng, img, wall_base)
    _draw_bystanders(rng, img, horizon, wall_base, int(rng.integers(8, 30)))
    light = _lighting(rng, (h, w), horizon, kind)
    img *= light[..., None]
    # Dirt, grain and unevenness at every scale, so no crop of the scene is a flat colour.
    img *= (1.0 + 0.07 * _smooth_noise(rng, (h, w), (h // 6, w // 6)))[..., None]
    img *= (1.0 + 0.05 * _smooth_noise(rng, (h, w), (h // 2, w // 2)))[..., None]
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.2)))  # background out of focus
    img = np.clip(img, 0.0, 1.0)
    model = _camera_model(rng, kind)
    # Auto-exposure: the camera meters the rows where people walk and aims at a mid-grey of its
    # own; a bright pink corridor is not rendered as a white-out.
    metered = float(img[int(max(wall_base - 60, 0)) : int(REF_ROW + 40)].mean())
    target = float(rng.uniform(0.42, 0.56))
    # Centre-weighted metering: the person counts too, so only half the correction applies.
    correction = (target ** (1.0 / model.gamma) / max(metered, 1e-3)) ** 0.5
    model = replace(model, exposure=float(np.clip(correction * model.exposure, 0.7, 1.5)))
    return CameraSite(
        camera=camera,
        kind=kind,
        panorama=img,
        illumination=light,
        horizon=horizon,
        wall_base=wall_base,
        model=model,
        info={"pillars": len(pillars), "metered": round(metered, 3), "target": round(target, 3)},
    )

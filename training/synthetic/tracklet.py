"""One tracklet: a person walking through a camera's site, cropped by a jittery tracker box,
with passers-by and poles in front, and the camera's optics, sensor and codec applied.

Geometry: the person walks on the site's ground plane. Each frame, the tracker box is centred on
the person (with lag and jitter) and resampled to 128x64, so the background slides and zooms
behind the person exactly as in a real tracker crop; the person's own position in the crop only
jitters. All randomness comes from one ``np.random.Generator`` per (seed, identity, camera).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from training.synthetic.body import PersonPose, render_person
from training.synthetic.person import PersonAppearance, sample_person
from training.synthetic.scene import CameraSite, build_site

FRAME_SHAPE = (128, 64)  # (H, W), i-LIDS-VID crops

# Spawn keys of the seed sequence: one independent stream per purpose.
_KEY_PERSON, _KEY_TRACKLET, _KEY_SITE, _KEY_LENGTH, _KEY_SPLITS, _KEY_ROUTES = range(6)
_KEY_SITE_CHOICE = 6

# (name, yaw in degrees, yaw jitter); yaw 90 walks to the right of the image.
DIRECTIONS: tuple[tuple[str, float, float], ...] = (
    ("left_to_right", 90.0, 12.0),
    ("right_to_left", -90.0, 12.0),
    ("toward", 0.0, 20.0),
    ("away", 180.0, 20.0),
    ("diagonal_toward_right", 45.0, 10.0),
    ("diagonal_toward_left", -45.0, 10.0),
    ("diagonal_away_right", 135.0, 10.0),
    ("diagonal_away_left", -135.0, 10.0),
)


def derive_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for one purpose (spawn key) of one dataset seed."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


def person_appearance(identity: int, seed: int) -> PersonAppearance:
    """The identity's appearance (independent of camera and of every other identity)."""
    return sample_person(derive_rng(seed, _KEY_PERSON, identity), identity)


@lru_cache(maxsize=64)
def camera_site(camera: int, seed: int, variant: int = 0) -> CameraSite:
    """The camera's site; cached because every tracklet of the camera crops the same scene.

    ``variant`` > 0 gives other sites (scene, light and camera model) for the same camera
    number: a camera position seen on other days and at other places (``sites_per_camera``).
    """
    key = (camera,) if variant == 0 else (camera, variant)
    return build_site(derive_rng(seed, _KEY_SITE, *key), camera)


def site_variant(identity: int, camera: int, seed: int, sites_per_camera: int) -> int:
    """Which of the camera's ``sites_per_camera`` sites films this identity (0 when one)."""
    if sites_per_camera <= 1:
        return 0
    return int(derive_rng(seed, _KEY_SITE_CHOICE, identity, camera).integers(sites_per_camera))


def walking_direction(identity: int, camera: int, seed: int) -> tuple[str, float, float]:
    """Per identity, cameras take different directions from a shuffled list."""
    order = derive_rng(seed, _KEY_ROUTES, identity).permutation(len(DIRECTIONS))
    return DIRECTIONS[int(order[(camera - 1) % len(DIRECTIONS)])]


def tracklet_length(identity: int, camera: int, seed: int, min_frames: int, max_frames: int) -> int:
    """Sequence length, uniform-ish with more short ones (as in i-LIDS-VID, 23-192 frames)."""
    rng = derive_rng(seed, _KEY_LENGTH, identity, camera)
    u = rng.random() ** 1.4
    return int(min_frames + round(u * (max_frames - min_frames)))


def split_rng(seed: int) -> np.random.Generator:
    return derive_rng(seed, _KEY_SPLITS)


# ----------------------------------------------------------------------------- trajectories


def _smooth_walk(rng: np.random.Generator, n: int, sigma: float, smooth: float) -> np.ndarray:
    """Tracker jitter: white noise low-passed both ways (zero phase), scaled to `sigma`."""
    x = rng.normal(0.0, 1.0, n + 20)
    x = cv2.GaussianBlur(x.reshape(1, -1), (0, 0), smooth).ravel()[10:-10]
    std = float(x.std()) if n > 1 else 1.0
    return x / max(std, 1e-6) * sigma


@dataclass(frozen=True)
class _Occluder:
    kind: str  # pole | passer | car | railing
    start: int
    stop: int
    x0: float  # crop x at `start` (pole/railing: scene x)
    speed: float
    colour: tuple[float, float, float]
    person: PersonAppearance | None = None
    yaw: float = 90.0
    height: float = 1.0


def _plan_occluder(rng, n: int, site: CameraSite, feet_scene_x: np.ndarray) -> _Occluder | None:
    if rng.random() > 0.35:
        return None
    kind = str(rng.choice(["pole", "passer", "passer", "car", "railing"]))
    if site.kind in ("hall", "corridor") and kind == "car":
        kind = "passer"
    colour = tuple(
        float(c)
        for c in rng.choice(
            [
                [0.55, 0.56, 0.58],
                [0.75, 0.62, 0.2],
                [0.15, 0.15, 0.16],
                [0.7, 0.7, 0.68],
                [0.45, 0.1, 0.1],
                [0.2, 0.25, 0.4],
            ]
        )
    )
    if kind in ("pole", "railing"):
        # A static object in the scene: it slides across the crop as the box follows the person.
        mid = feet_scene_x[n // 2] + rng.uniform(-25, 25)
        return _Occluder(kind, 0, n, float(mid), 0.0, colour, height=float(rng.uniform(0.2, 0.4)))
    length = int(rng.integers(8, 30))
    start = int(rng.integers(0, max(n - length // 2, 1)))
    direction = 1.0 if rng.random() < 0.5 else -1.0
    speed = direction * rng.uniform(3.0, 7.0)
    x0 = -40.0 if direction > 0 else FRAME_SHAPE[1] + 40.0
    person = sample_person(rng, -1000) if kind == "passer" else None
    return _Occluder(
        kind,
        start,
        start + length + 20,
        x0,
        speed,
        colour,
        person,
        yaw=90.0 * direction,
        height=float(rng.uniform(1.2, 1.6)),
    )


def _draw_occluder(occ: _Occluder, t: int, img: np.ndarray, scene_to_crop) -> None:
    h, w = FRAME_SHAPE
    if not occ.start <= t < occ.stop:
        return
    if occ.kind == "pole":
        x, scale = scene_to_crop(occ.x0)
        half = max(1.5, 5.0 / scale)
        if -half < x < w + half:
            layer = np.zeros((h, w), np.float32)
            cv2.rectangle(
                layer,
                (int((x - half) * 8), 0),
                (int((x + half) * 8), h * 8),
                1.0,
                -1,
                cv2.LINE_AA,
                3,
            )
            hl = np.zeros_like(layer)
            cv2.line(
                hl,
                (int((x - half * 0.3) * 8), 0),
                (int((x - half * 0.3) * 8), h * 8),
                1.0,
                1,
                cv2.LINE_AA,
                3,
            )
            col = np.array(occ.colour, np.float32)
            paint = col * (1.0 + 0.5 * hl[..., None])
            img[:] = paint * layer[..., None] + img * (1.0 - layer[..., None])
        return
    if occ.kind == "railing":
        x, scale = scene_to_crop(occ.x0)
        top = int(h * (1.0 - occ.height))
        layer = np.zeros((h, w), np.float32)
        cv2.rectangle(layer, (0, top), (w, top + 3), 1.0, -1)
        post = 28.0 / scale
        for px in np.arange(x - 4 * post, x + 4 * post, post):
            cv2.rectangle(layer, (int(px), top), (int(px) + 2, h), 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.7)
        col = np.array(occ.colour, np.float32)
        img[:] = col * layer[..., None] + img * (1.0 - layer[..., None])
        return
    x = occ.x0 + occ.speed * (t - occ.start)
    if occ.kind == "passer" and occ.person is not None:
        stature = h * occ.height
        pose = PersonPose(
            phase=t * 0.45,
            yaw=occ.yaw,
            feet_x=x,
            feet_y=h * 0.5 + stature * 0.55,
            height_px=stature,
        )
        rgb, alpha = render_person(occ.person, pose, FRAME_SHAPE)
        rgb = cv2.GaussianBlur(rgb, (0, 0), 1.3) * 0.85  # close to the lens: out of focus
        alpha = cv2.GaussianBlur(alpha, (0, 0), 1.3)
        img[:] = rgb * alpha[..., None] + img * (1.0 - alpha[..., None])
    elif occ.kind == "car":
        layer = np.zeros((h, w), np.float32)
        body_top = int(h * 0.55)
        cv2.rectangle(layer, (int(x - 90), body_top), (int(x + 90), h), 1.0, -1)
        cv2.rectangle(layer, (int(x - 50), body_top - 22), (int(x + 45), body_top), 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), 1.5)
        paint = np.empty((h, w, 3), np.float32)
        paint[:] = occ.colour
        paint[body_top - 22 : body_top - 2] *= 0.35  # windows
        img[:] = paint * layer[..., None] + img * (1.0 - layer[..., None])


# ----------------------------------------------------------------------------- sensor


def _apply_camera(
    frame: np.ndarray,
    previous: np.ndarray | None,
    site: CameraSite,
    look: dict,
    rng: np.random.Generator,
) -> np.ndarray:
    """Optics, exposure, colour, sensor noise and JPEG: float RGB [0,1] -> uint8 RGB."""
    cam = site.model
    h, w = FRAME_SHAPE
    x = frame
    if cam.interlaced and previous is not None:
        x = x.copy()
        x[1::2] = previous[1::2]  # the odd field was exposed 20 ms earlier: combing on motion
    x = cv2.GaussianBlur(x, (0, 0), look["defocus"])
    if look["motion_blur"] > 0.6:
        k = np.zeros((1, 5), np.float32)
        k[0, :] = 1.0
        k = cv2.resize(k, (max(int(look["motion_blur"] * 2) | 1, 1), 1))
        x = cv2.filter2D(x, -1, k / k.sum())
    small = (max(8, round(w * look["resolution"])), max(16, round(h * look["resolution"])))
    x = cv2.resize(
        cv2.resize(x, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR
    )
    x = x * look["exposure"] * np.asarray(look["white_balance"], np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * look["saturation"]
    x = (x - 0.45) * look["contrast"] + 0.45
    x = np.clip(x, 0.0, 1.0) ** look["gamma"]
    x = look["black_lift"] + x * (1.0 - look["black_lift"])
    sigma = cam.noise * (0.6 + 0.8 * np.sqrt(np.clip(x.mean(axis=2, keepdims=True), 0, 1)))
    luma = rng.standard_normal((h, w, 1)).astype(np.float32)
    chroma = rng.standard_normal((h, w, 3)).astype(np.float32)
    x = x + sigma * ((1 - cam.chroma_noise) * luma + cam.chroma_noise * chroma)
    out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    quality = int(rng.integers(cam.jpeg_quality[0], cam.jpeg_quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


# ----------------------------------------------------------------------------- the tracklet


def synthesize_tracklet(
    identity: int, camera: int, num_frames: int, seed: int = 0, sites_per_camera: int = 1
) -> list[np.ndarray]:
    """Render one tracklet in memory: `num_frames` RGB uint8 frames of shape (128, 64, 3).

    ``identity`` picks the person (same identity + seed = same person in every camera),
    ``camera`` (1, 2, ...) picks the site and camera model (one of ``sites_per_camera`` sites,
    drawn per identity); the result depends only on the arguments, so callers can build query
    tracklets without disk.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    person = person_appearance(identity, seed)
    site = camera_site(camera, seed, site_variant(identity, camera, seed, sites_per_camera))
    frames, _ = _render(person, site, identity, camera, num_frames, seed)
    return frames


def tracklet_info(
    identity: int, camera: int, num_frames: int, seed: int = 0, sites_per_camera: int = 1
) -> dict:
    """What `synthesize_tracklet` draws for this tracklet (site, direction, occluder, look)."""
    person = person_appearance(identity, seed)
    variant = site_variant(identity, camera, seed, sites_per_camera)
    site = camera_site(camera, seed, variant)
    info = _plan(person, site, identity, camera, num_frames, seed)[0]
    return {"site": variant, "site_kind": site.kind, **info}


def _plan(person, site: CameraSite, identity, camera, n, seed):
    rng = derive_rng(seed, _KEY_TRACKLET, identity, camera)
    cam = site.model
    gait = person.gait
    # The same person walks a little differently on another day: cadence and stride vary.
    gait = replace(
        gait,
        cycle_frames=gait.cycle_frames * float(np.exp(rng.normal(0, 0.03))),
        arm_swing=gait.arm_swing * float(np.exp(rng.normal(0, 0.08))),
    )
    person = replace(person, gait=gait)
    name, yaw0, yaw_jit = walking_direction(identity, camera, seed)
    yaw = yaw0 + rng.uniform(-yaw_jit, yaw_jit)
    stride = 4.0 * person.body.leg * math.sin(math.radians(gait.hip_swing)) * 0.85
    speed = stride / gait.cycle_frames  # statures per frame: feet do not slide
    t = np.arange(n, dtype=np.float64)
    # Distance in statures-at-reference-row units: moving toward the camera grows the person.
    depth0 = rng.uniform(0.75, 1.25)  # 1 = the reference row
    dist0 = 12.0 / depth0
    approach = speed * math.cos(math.radians(yaw))
    dist = np.maximum(dist0 - approach * t, 3.0)
    stature_scene = 100.0 * 12.0 / dist * person.body.height
    lateral = speed * math.sin(math.radians(yaw))
    feet_x = np.zeros(n)
    feet_x[1:] = np.cumsum(lateral * stature_scene[1:])
    w_pano = site.panorama.shape[1]
    span = float(feet_x.max() - feet_x.min())
    start = rng.uniform(80.0 - feet_x.min(), max(w_pano - 80.0 - feet_x.max(), 81.0 - feet_x.min()))
    feet_x = feet_x + start
    feet_y = np.array([site.row_for(s) for s in stature_scene])
    fraction = rng.uniform(*cam.person_fraction)
    # Tracker: the box lags scale changes and jitters in position and size.
    frac = fraction * (1.0 + _smooth_walk(rng, n, rng.uniform(0.015, 0.05), 3.0))
    jx = _smooth_walk(rng, n, rng.uniform(0.8, 3.0), rng.uniform(1.0, 3.0))
    jy = _smooth_walk(rng, n, rng.uniform(0.5, 2.0), rng.uniform(1.0, 3.0))
    look = {
        "exposure": cam.exposure * float(np.exp(rng.normal(0, 0.1))),
        "white_balance": tuple(
            float(v) for v in np.asarray(cam.white_balance) * np.exp(rng.normal(0, 0.03, 3))
        ),
        "saturation": cam.saturation * float(np.exp(rng.normal(0, 0.08))),
        "contrast": cam.contrast * float(np.exp(rng.normal(0, 0.05))),
        "gamma": cam.gamma * float(np.exp(rng.normal(0, 0.06))),
        "black_lift": cam.black_lift,
        "defocus": max(0.25, cam.defocus + rng.normal(0, 0.15)),
        "resolution": float(np.clip(cam.resolution * np.exp(rng.normal(0, 0.08)), 0.35, 1.0)),
        "motion_blur": abs(lateral) * 100.0 * float(rng.uniform(0.0, 0.4)),
    }
    occluder = _plan_occluder(rng, n, site, feet_x)
    info = {
        "direction": name,
        "yaw": round(float(yaw), 1),
        "person_fraction": round(float(fraction), 3),
        "scene_span_px": round(span, 1),
        "occluder": occluder.kind if occluder else "none",
        "look": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in look.items()},
    }
    info["look"]["white_balance"] = [round(v, 3) for v in look["white_balance"]]
    state = {
        "rng": rng,
        "person": person,
        "yaw": yaw,
        "stature_scene": stature_scene,
        "feet_x": feet_x,
        "feet_y": feet_y,
        "frac": frac,
        "jx": jx,
        "jy": jy,
        "look": look,
        "occluder": occluder,
        "phase0": rng.uniform(0, 2 * math.pi),
        "walkers": _plan_walkers(rng, n, site, feet_x, feet_y),
    }
    return info, state


def _plan_walkers(rng, n, site: CameraSite, feet_x, feet_y) -> list[dict]:
    """Other people walking far behind the person (they share the background's defocus)."""
    walkers = []
    for i in range(int(rng.integers(0, 3))):
        low, high = site.wall_base + 2.0, float(feet_y.min()) - 8.0
        row = low + rng.random() * (high - low)
        if high <= low:  # the person walks right along the wall: nobody fits behind
            continue
        direction = 1.0 if rng.random() < 0.5 else -1.0
        walkers.append(
            {
                "person": sample_person(rng, -2000 - i),
                "row": row,
                "x0": float(feet_x[0] + rng.uniform(-60, 60)),
                "speed": direction * rng.uniform(0.8, 2.5),
                "yaw": 90.0 * direction + rng.uniform(-20, 20),
                "phase0": rng.uniform(0, 2 * math.pi),
            }
        )
    return walkers


def _render(person, site: CameraSite, identity, camera, n, seed):
    info, st = _plan(person, site, identity, camera, n, seed)
    person = st["person"]
    rng = st["rng"]
    h, w = FRAME_SHAPE
    frames: list[np.ndarray] = []
    previous = None
    cycle = person.gait.cycle_frames
    for t in range(n):
        height_crop = st["frac"][t] * h  # stature in crop pixels
        scale = st["stature_scene"][t] / height_crop  # scene pixels per crop pixel
        feet_cx = w / 2.0 + st["jx"][t]
        feet_cy = h / 2.0 + height_crop * 0.5 + 2.0 + st["jy"][t]
        fx, fy = st["feet_x"][t], st["feet_y"][t]
        # crop -> scene: scene = scale * (crop - feet_crop) + feet_scene
        m = np.array([[scale, 0.0, fx - scale * feet_cx], [0.0, scale, fy - scale * feet_cy]])
        img = cv2.warpAffine(
            site.panorama,
            m,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )

        def scene_to_crop(sx: float, fx=fx, feet_cx=feet_cx, scale=scale) -> tuple[float, float]:
            return (sx - fx) / scale + feet_cx, scale

        for wk in st["walkers"]:
            sx = wk["x0"] + wk["speed"] * t
            cx, _ = scene_to_crop(sx)
            stature = site.scale_at(wk["row"]) / scale
            if not -stature < cx < w + stature:
                continue
            cy = (wk["row"] - fy) / scale + feet_cy
            pose = PersonPose(wk["phase0"] + t * 0.45, wk["yaw"], cx, cy, stature)
            rgb, alpha = render_person(wk["person"], pose, FRAME_SHAPE)
            rgb, alpha = cv2.GaussianBlur(rgb, (0, 0), 0.7), cv2.GaussianBlur(alpha, (0, 0), 0.7)
            img = rgb * alpha[..., None] + img * (1.0 - alpha[..., None])

        # Contact shadow under the feet.
        shadow = np.zeros((h, w), np.float32)
        cv2.ellipse(
            shadow,
            (round(feet_cx * 8), round(feet_cy * 8)),
            (round(height_crop * 0.16 * 8), round(height_crop * 0.035 * 8)),
            0,
            0,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
            3,
        )
        shadow = cv2.GaussianBlur(shadow, (0, 0), 2.0)
        img = img * (1.0 - 0.4 * shadow[..., None])

        light = float(
            site.illumination[
                int(np.clip(fy - st["stature_scene"][t] * 0.5, 0, site.illumination.shape[0] - 1)),
                int(np.clip(fx, 0, site.illumination.shape[1] - 1)),
            ]
        )
        pose = PersonPose(
            phase=st["phase0"] + 2.0 * math.pi * t / cycle,
            yaw=st["yaw"],
            feet_x=feet_cx,
            feet_y=feet_cy,
            height_px=height_crop / person.body.height,
            light_side=site.model.light_side,
        )
        rgb, alpha = render_person(person, pose, FRAME_SHAPE)
        rgb = rgb * (0.75 + 0.25 * light)
        img = rgb * alpha[..., None] + img * (1.0 - alpha[..., None])
        if st["occluder"] is not None:
            _draw_occluder(st["occluder"], t, img, scene_to_crop)
        img = img.astype(np.float32)
        frames.append(_apply_camera(img, previous, site, st["look"], rng))
        previous = img
    return frames, info

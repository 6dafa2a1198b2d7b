"""Articulated pedestrian rendering: a 3-D stick skeleton driven by a gait cycle, drawn as
anti-aliased tapered limbs, ellipses and polygons, then softly shaded.

Coordinates of the skeleton are in units of the person's stature (1.0 = feet to top of head):
x = the person's left, y = up, z = forward (walking direction). A yaw angle turns the body
(0 = facing the camera, 90 = walking to the right of the image, 180 = walking away), and an
orthographic projection puts it on the image. Parts are painted far-to-near, so the same
person seen from the side shows one arm behind the body, and from the back shows the backpack
over the shirt instead of the chest print.

Drawing happens on a 2x supersampled uint8 canvas (OpenCV's anti-aliasing is for 8-bit images)
and is shrunk with area averaging, which gives clean sub-pixel edges at 128x64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from training.synthetic.person import Colour, PersonAppearance

SUPERSAMPLE = 2
_SHIFT = 3  # OpenCV fixed-point bits: coordinates with 1/8-pixel precision
_ONE = 1 << _SHIFT
FAR_SIDE_SHADE = 0.72  # limbs on the far side of the body are in the body's shadow

Vec3 = np.ndarray


@dataclass(frozen=True)
class PersonPose:
    """Where and how to draw a person in the output image."""

    phase: float  # gait phase, radians
    yaw: float  # degrees, 0 = facing the camera, 90 = walking right, 180 = away
    feet_x: float  # output-pixel position of the ground point under the pelvis
    feet_y: float
    height_px: float  # stature in output pixels
    light_side: float = 0.3  # -1..1, horizontal light direction (shading gradient)


# ----------------------------------------------------------------------------- skeleton


def _leg(hip: Vec3, angle: float, knee: float, thigh: float, shin: float):
    """Knee, ankle, toe and heel of one leg from hip flexion and knee bend (radians)."""
    knee_pt = hip + thigh * np.array([0.0, -math.cos(angle), math.sin(angle)])
    shin_angle = angle - knee
    ankle = knee_pt + shin * np.array([0.0, -math.cos(shin_angle), math.sin(shin_angle)])
    pitch = 0.5 * shin_angle + 0.15
    toe = ankle + 0.075 * np.array([0.0, math.sin(pitch) - 0.35, math.cos(pitch)])
    heel = ankle + np.array([0.0, -0.03, -0.022])
    return knee_pt, ankle, toe, heel


def skeleton(person: PersonAppearance, phase: float) -> dict[str, Vec3]:
    """3-D joint positions at one gait phase; the lowest foot point rests on y = 0."""
    body, gait = person.body, person.gait
    hip_swing = math.radians(gait.hip_swing)
    leg_len = body.leg - 0.045
    thigh, shin = 0.52 * leg_len, 0.48 * leg_len
    sway = gait.sway * math.sin(phase)
    joints: dict[str, Vec3] = {}
    lowest = []
    for side, name in ((1.0, "l"), (-1.0, "r")):
        ph = phase + (math.pi if side > 0 else 0.0)
        angle = hip_swing * math.sin(ph)
        knee = math.radians(4.0 + gait.knee_bend * max(0.0, math.cos(ph + math.pi / 4)) ** 1.5)
        hip = np.array([side * body.hip * 0.72 + 0.5 * sway, body.leg, 0.0])
        knee_pt, ankle, toe, heel = _leg(hip, angle, knee, thigh, shin)
        joints.update(
            {
                f"hip_{name}": hip,
                f"knee_{name}": knee_pt,
                f"ankle_{name}": ankle,
                f"toe_{name}": toe,
                f"heel_{name}": heel,
            }
        )
        lowest.append(min(ankle[1] - 0.03, toe[1] - 0.012, heel[1]))
    # Bob: the stance leg lifts the body; the gait's bounce scales how much of it shows.
    _, ref_ankle, ref_toe, ref_heel = _leg(np.array([0, body.leg, 0.0]), 0.0, 0.07, thigh, shin)
    ref = min(ref_ankle[1] - 0.03, ref_toe[1] - 0.012, ref_heel[1])
    lift = -(ref + gait.bounce * (min(lowest) - ref))

    lean = math.radians(gait.lean)
    shoulder_y = 0.815
    lean_z = math.sin(lean) * (shoulder_y - body.leg)
    joints["pelvis"] = np.array([sway * 0.5, body.leg + 0.02, 0.0])
    joints["neck"] = np.array([sway, 0.845, lean_z * 1.1])
    joints["head"] = np.array([sway, 0.93, lean_z * 1.2 + 0.012])
    arm_swing = math.radians(gait.arm_swing)
    upper, fore = 0.17, 0.155
    for side, name in ((1.0, "l"), (-1.0, "r")):
        ph = phase + (math.pi if side > 0 else 0.0)
        holding = person.carried != "none" and side == -person.bag_side
        swing = (0.4 if holding else 1.0) * arm_swing
        angle = -swing * math.sin(ph)
        elbow_bend = math.radians(gait.elbow_bend) + 0.6 * max(0.0, angle)
        if holding and person.carried == "phone":
            elbow_bend = math.radians(80.0)
        shoulder = np.array([side * body.shoulder + sway, shoulder_y, lean_z])
        out = side * 0.12
        elbow = shoulder + upper * _unit(out, -math.cos(angle), math.sin(angle))
        fa = angle + elbow_bend
        wrist = elbow + fore * _unit(out * 0.4, -math.cos(fa), math.sin(fa))
        joints.update(
            {f"shoulder_{name}": shoulder, f"elbow_{name}": elbow, f"wrist_{name}": wrist}
        )
    for key in joints:
        joints[key] = joints[key] + np.array([0.0, lift, 0.0])
    return joints


def _unit(x: float, y: float, z: float) -> Vec3:
    v = np.array([x, y, z])
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- drawing


class _Canvas:
    """A supersampled RGB + coverage canvas with projection from skeleton space."""

    def __init__(self, shape: tuple[int, int], pose: PersonPose, stature: float):
        self.h, self.w = shape[0] * SUPERSAMPLE, shape[1] * SUPERSAMPLE
        self.rgb = np.zeros((self.h, self.w, 3), np.uint8)
        self.alpha = np.zeros((self.h, self.w), np.uint8)
        yaw = math.radians(pose.yaw)
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)
        self.scale = pose.height_px * stature * SUPERSAMPLE
        self.ox, self.oy = pose.feet_x * SUPERSAMPLE, pose.feet_y * SUPERSAMPLE

    def project(self, p: Vec3) -> tuple[float, float]:
        sx = p[0] * self.cos + p[2] * self.sin
        return self.ox + sx * self.scale, self.oy - p[1] * self.scale

    def depth(self, p: Vec3) -> float:
        """Distance toward the camera (bigger = nearer)."""
        return -p[0] * self.sin + p[2] * self.cos

    def px(self, length: float) -> float:
        return length * self.scale

    def _fixed(self, pts) -> np.ndarray:
        return np.round(np.asarray(pts, np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def polygon(self, pts, colour: Colour, convex: bool = True) -> None:
        fixed = self._fixed(pts)
        c = _bgr255(colour)
        if convex:
            cv2.fillConvexPoly(self.rgb, fixed, c, cv2.LINE_AA, _SHIFT)
            cv2.fillConvexPoly(self.alpha, fixed, 255, cv2.LINE_AA, _SHIFT)
        else:
            cv2.fillPoly(self.rgb, [fixed], c, cv2.LINE_AA, _SHIFT)
            cv2.fillPoly(self.alpha, [fixed], 255, cv2.LINE_AA, _SHIFT)

    def ellipse(self, centre, axes, colour: Colour, angle=0.0, start=0.0, end=360.0) -> None:
        cx, cy = (round(v * _ONE) for v in centre)
        ax = (max(1, round(axes[0] * _ONE)), max(1, round(axes[1] * _ONE)))
        c = _bgr255(colour)
        cv2.ellipse(self.rgb, (cx, cy), ax, angle, start, end, c, -1, cv2.LINE_AA, _SHIFT)
        cv2.ellipse(self.alpha, (cx, cy), ax, angle, start, end, 255, -1, cv2.LINE_AA, _SHIFT)

    def capsule(self, a, b, ra: float, rb: float, colour: Colour) -> None:
        """A tapered limb segment with round ends, radii in canvas pixels."""
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        d = b - a
        n = float(np.hypot(*d))
        if n > 1e-6:
            nx, ny = -d[1] / n, d[0] / n
            quad = [
                (a[0] + nx * ra, a[1] + ny * ra),
                (b[0] + nx * rb, b[1] + ny * rb),
                (b[0] - nx * rb, b[1] - ny * rb),
                (a[0] - nx * ra, a[1] - ny * ra),
            ]
            self.polygon(quad, colour)
        self.ellipse(a, (ra, ra), colour)
        self.ellipse(b, (rb, rb), colour)

    def box3d(self, centre: Vec3, half: tuple[float, float, float], colour: Colour, round_=0.25):
        """A bag-like box: its projected outline as a rounded rectangle."""
        hx, hy, hz = half
        width = hx * abs(self.cos) + hz * abs(self.sin)
        cx, cy = self.project(centre)
        w, h = self.px(width), self.px(hy)
        r = min(w, h) * round_
        pts = [
            (cx - w + r, cy - h),
            (cx + w - r, cy - h),
            (cx + w, cy - h + r),
            (cx + w, cy + h - r),
            (cx + w - r, cy + h),
            (cx - w + r, cy + h),
            (cx - w, cy + h - r),
            (cx - w, cy - h + r),
        ]
        self.polygon(pts, colour)

    def clipped_pattern(self, pts, draw: Callable[[np.ndarray, int, int], None]) -> None:
        """Paint `draw` (given a BGR patch and its top-left) only inside polygon `pts`."""
        pts = np.asarray(pts, np.float64)
        x0, y0 = np.floor(pts.min(0)).astype(int) - 1
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.w), min(y1, self.h)
        if x1 <= x0 or y1 <= y0:
            return
        region = self.rgb[y0:y1, x0:x1]
        patch = region.copy()
        draw(patch, x0, y0)
        mask = np.zeros(region.shape[:2], np.uint8)
        cv2.fillConvexPoly(mask, self._fixed(pts - [x0, y0]), 255, cv2.LINE_AA, _SHIFT)
        m = (mask.astype(np.float32) / 255.0)[..., None]
        region[:] = (patch * m + region * (1.0 - m) + 0.5).astype(np.uint8)


def _bgr255(colour: Colour) -> tuple[int, int, int]:
    # Canvases are RGB in memory; OpenCV only sees channel numbers, so no swap is needed.
    return (round(colour[0] * 255), round(colour[1] * 255), round(colour[2] * 255))


def _shade(colour: Colour, factor: float) -> Colour:
    return (
        min(colour[0] * factor, 1.0),
        min(colour[1] * factor, 1.0),
        min(colour[2] * factor, 1.0),
    )


# ----------------------------------------------------------------------------- the person


def render_person(
    person: PersonAppearance, pose: PersonPose, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `person` in `pose` on an empty (H, W) image.

    Returns float32 RGB in [0, 1] (H, W, 3) and float32 coverage alpha (H, W); composite as
    ``out = rgb * alpha + background * (1 - alpha)`` (the rgb is premultiplied-free).
    """
    cv = _Canvas(shape, pose, person.body.height)
    j = skeleton(person, pose.phase)
    b = person.body
    build = b.build
    parts: list[tuple[float, Callable[[], None]]] = []
    far_shade = FAR_SIDE_SHADE

    def side_factor(point: Vec3) -> float:
        return far_shade if cv.depth(point) < -0.02 else 1.0

    # Legs (always behind the torso), far leg first.
    for name in ("l", "r"):
        hip = j[f"hip_{name}"]
        key = -10.0 + cv.depth(hip)

        def draw_leg(name=name, hip=hip):
            f = side_factor(hip)
            knee, ankle = j[f"knee_{name}"], j[f"ankle_{name}"]
            lower_c = person.bottom_colour
            shin_c = person.bottom_colour
            if person.lower == "shorts":
                shin_c = person.skin_colour
            elif person.lower == "skirt":
                lower_c = shin_c = _shade(person.skin_colour, 0.92)
            thigh_r, knee_r, ankle_r = 0.043 * build, 0.031 * build, 0.022 * build
            cv.capsule(
                cv.project(hip), cv.project(knee), cv.px(thigh_r), cv.px(knee_r), _shade(lower_c, f)
            )
            cv.capsule(
                cv.project(knee),
                cv.project(ankle),
                cv.px(knee_r),
                cv.px(ankle_r),
                _shade(shin_c, f),
            )
            if person.lower == "shorts":
                mid = hip + 0.75 * (knee - hip)
                cv.capsule(
                    cv.project(hip),
                    cv.project(mid),
                    cv.px(thigh_r * 1.12),
                    cv.px(knee_r * 1.25),
                    _shade(person.bottom_colour, f),
                )
            toe, heel = j[f"toe_{name}"], j[f"heel_{name}"]
            shoe = _shade(person.shoe_colour, f)
            cv.capsule(cv.project(heel), cv.project(toe), cv.px(0.022), cv.px(0.017), shoe)
            cv.capsule(cv.project(ankle), cv.project(heel), cv.px(0.021), cv.px(0.022), shoe)

        parts.append((key, draw_leg))

    # Pelvis / skirt: covers the top of the thighs.
    def draw_pelvis():
        p = j["pelvis"]
        hw = b.hip * abs(cv.cos) + b.depth * abs(cv.sin)
        cx, cy = cv.project(p)
        top = cy - cv.px(0.05)
        bot = cy + cv.px(0.06)
        w = cv.px(hw * 1.05 * build**0.3)
        if person.lower == "skirt":
            hem = cv.project(p - np.array([0, 0.22, 0]))[1]
            flare = cv.px(0.03 + 0.01 * math.sin(pose.phase * 2))
            cv.polygon(
                [(cx - w, top), (cx + w, top), (cx + w + flare, hem), (cx - w - flare, hem)],
                person.bottom_colour,
            )
        else:
            cv.polygon(
                [(cx - w, top), (cx + w, top), (cx + w * 0.85, bot), (cx - w * 0.85, bot)],
                person.bottom_colour,
            )

    parts.append((-5.0, draw_pelvis))

    # Torso (and long coat), with its pattern.
    def torso_outline(hem_y: float, hem_scale: float):
        sl, sr = j["shoulder_l"], j["shoulder_r"]
        neck = j["neck"]
        sw = b.shoulder * abs(cv.cos) + (b.depth + 0.01) * abs(cv.sin)
        ww = (b.hip * 0.95 + 0.012 * (build - 1.0)) * abs(cv.cos) + b.depth * 1.1 * abs(cv.sin)
        ww *= hem_scale
        _, ny = cv.project(neck)
        mx = (cv.project(sl)[0] + cv.project(sr)[0]) / 2.0
        top_y = ny + cv.px(0.02)
        hem = cv.project(j["pelvis"] + np.array([0.0, hem_y, 0.0]))
        hx = hem[0]
        sh, hw_px = cv.px(sw), cv.px(ww)
        return [
            (mx - sh * 0.55, top_y - cv.px(0.012)),
            (mx + sh * 0.55, top_y - cv.px(0.012)),
            (mx + sh, top_y + cv.px(0.03)),
            (hx + hw_px, hem[1]),
            (hx - hw_px, hem[1]),
            (mx - sh, top_y + cv.px(0.03)),
        ]

    facing = cv.cos  # > 0: chest visible

    def draw_torso():
        coat = person.lower == "long_coat"
        hem_y, hem_scale = (-0.2, 1.35) if coat else (-0.03, 1.0)
        pts = torso_outline(hem_y, hem_scale)
        base = person.top_colour
        cv.polygon(pts, base)
        for sx in (-1.0, 1.0):  # rounded shoulders
            sh = j["shoulder_l" if sx > 0 else "shoulder_r"]
            cv.ellipse(cv.project(sh), (cv.px(0.034 * build),) * 2, base)
        _torso_pattern(cv, person, pts, facing, pose)

    parts.append((0.0, draw_torso))

    # Arms.
    for name in ("l", "r"):
        shoulder = j[f"shoulder_{name}"]
        d = cv.depth(shoulder)
        front = d > -0.3 * b.shoulder
        key = (5.0 + d) if front else (-20.0 + d)

        def draw_arm(name=name, shoulder=shoulder):
            f = side_factor(shoulder)
            elbow, wrist = j[f"elbow_{name}"], j[f"wrist_{name}"]
            sleeve = person.top_colour
            r_sh, r_el, r_wr = 0.027 * build, 0.022 * build, 0.017 * build
            skin = _shade(person.skin_colour, f)
            if person.long_sleeves:
                cv.capsule(
                    cv.project(shoulder),
                    cv.project(elbow),
                    cv.px(r_sh),
                    cv.px(r_el),
                    _shade(sleeve, f),
                )
                cv.capsule(
                    cv.project(elbow),
                    cv.project(wrist),
                    cv.px(r_el),
                    cv.px(r_wr),
                    _shade(sleeve, f),
                )
            else:
                cv.capsule(
                    cv.project(shoulder),
                    cv.project(elbow),
                    cv.px(r_sh * 0.9),
                    cv.px(r_el * 0.9),
                    skin,
                )
                cv.capsule(
                    cv.project(elbow), cv.project(wrist), cv.px(r_el * 0.9), cv.px(r_wr * 0.9), skin
                )
                mid = shoulder + 0.55 * (elbow - shoulder)
                cv.capsule(
                    cv.project(shoulder),
                    cv.project(mid),
                    cv.px(r_sh * 1.15),
                    cv.px(r_el * 1.2),
                    _shade(sleeve, f),
                )
            hand = wrist + 0.025 * (wrist - elbow) / max(np.linalg.norm(wrist - elbow), 1e-6)
            cv.ellipse(cv.project(hand), (cv.px(0.019),) * 2, skin)
            holding = person.carried != "none" and (1 if name == "l" else -1) == -person.bag_side
            if holding:
                _draw_carried(cv, person, hand, f)

        parts.append((key, draw_arm))

    # Bags.
    if person.bag == "backpack":
        centre = np.array([0.0, 0.67, -(b.depth + 0.045)]) + np.array([0, j["neck"][1] - 0.845, 0])
        d = cv.depth(centre)
        key = 3.0 if d > 0.01 else -30.0

        def draw_backpack(centre=centre, d=d):
            f = 1.0 if d > 0.01 else 0.85
            colour = _shade(person.bag_colour, f)
            cv.box3d(centre, (0.085, 0.115, 0.045), colour)
            if d > 0.01:  # seen from behind: a pocket and its seam
                cv.box3d(
                    centre + np.array([0, -0.05, -0.04]),
                    (0.06, 0.045, 0.02),
                    _shade(person.bag_colour, 0.8),
                )

        parts.append((key, draw_backpack))
        if facing > 0.15:

            def draw_straps():
                strap = _shade(person.bag_colour, 0.8)
                for sx in (-1.0, 1.0):
                    top = j["shoulder_l" if sx > 0 else "shoulder_r"] * np.array([0.6, 1, 1])
                    bot = top + np.array([0.01 * sx, -0.2, 0.0])
                    cv.capsule(cv.project(top), cv.project(bot), cv.px(0.01), cv.px(0.009), strap)

            parts.append((1.0, draw_straps))
    elif person.bag == "shoulder_bag":
        side = float(person.bag_side)
        bag_pos = j["pelvis"] + np.array([-side * (b.hip + 0.04), 0.02, 0.02])
        d = cv.depth(bag_pos)

        def draw_strap():
            top = j["shoulder_l" if side > 0 else "shoulder_r"]
            cv.capsule(
                cv.project(top),
                cv.project(bag_pos),
                cv.px(0.009),
                cv.px(0.009),
                _shade(person.bag_colour, 0.75),
            )

        def draw_bag(bag_pos=bag_pos, d=d):
            f = FAR_SIDE_SHADE if d < -0.03 else 1.0
            cv.box3d(bag_pos, (0.065, 0.055, 0.03), _shade(person.bag_colour, f), round_=0.35)

        parts.append((1.0 if facing > -0.5 else 4.0, draw_strap))
        parts.append((2.0 if d > -0.03 else -25.0, draw_bag))

    # Long hair behind the head.
    if person.hair_length in ("medium", "long", "ponytail"):
        behind = facing > -0.2
        parts.append((-24.0 if behind else 4.0, lambda: _draw_back_hair(cv, person, j)))

    parts.append((10.0, lambda: _draw_head(cv, person, j, pose)))

    for _, draw in sorted(parts, key=lambda kv: kv[0]):
        draw()
    return _finish(cv, pose)


def _torso_pattern(cv: _Canvas, person: PersonAppearance, pts, facing: float, pose: PersonPose):
    pattern = person.pattern
    second = person.second_colour
    c2 = _bgr255(second)
    period = cv.px(person.extras["stripe_period"])
    top_y = min(p[1] for p in pts)
    xs = [p[0] for p in pts]
    mid_x = (min(xs) + max(xs)) / 2.0
    if pattern == "h_stripes":

        def draw(patch, x0, y0):
            y = top_y + period * 0.5 - y0
            while y < patch.shape[0]:
                cv2.line(
                    patch,
                    (0, round(y * _ONE)),
                    (patch.shape[1] * _ONE, round(y * _ONE)),
                    c2,
                    max(1, round(period * 0.45)),
                    cv2.LINE_AA,
                    _SHIFT,
                )
                y += period

        cv.clipped_pattern(pts, draw)
    elif pattern in ("v_stripes", "checks"):
        spacing = period * (0.9 if pattern == "checks" else 0.8) * max(abs(facing), 0.35)
        thick = max(1, round(period * (0.25 if pattern == "checks" else 0.4)))

        def draw(patch, x0, y0):
            x = mid_x - x0 - spacing * math.floor((mid_x - x0) / spacing)
            while x < patch.shape[1]:
                cv2.line(
                    patch,
                    (round(x * _ONE), 0),
                    (round(x * _ONE), patch.shape[0] * _ONE),
                    c2,
                    thick,
                    cv2.LINE_AA,
                    _SHIFT,
                )
                x += spacing
            if pattern == "checks":
                y = top_y - y0 + period * 0.3
                while y < patch.shape[0]:
                    cv2.line(
                        patch,
                        (0, round(y * _ONE)),
                        (patch.shape[1] * _ONE, round(y * _ONE)),
                        c2,
                        thick,
                        cv2.LINE_AA,
                        _SHIFT,
                    )
                    y += period * 0.9

        cv.clipped_pattern(pts, draw)
    elif pattern == "logo" and facing > 0.25:
        chest_x = mid_x + cv.px(0.05 * cv.sin)
        chest_y = top_y + cv.px(0.09)
        size = cv.px(0.045) * (0.5 + 0.5 * facing)
        shape = person.extras["logo_shape"]
        if shape == 0:
            cv.ellipse((chest_x, chest_y), (size, size), second)
        elif shape == 1:
            cv.polygon(
                [
                    (chest_x - size * 1.3, chest_y - size * 0.7),
                    (chest_x + size * 1.3, chest_y - size * 0.7),
                    (chest_x + size * 1.3, chest_y + size * 0.7),
                    (chest_x - size * 1.3, chest_y + size * 0.7),
                ],
                second,
            )
        else:
            cv.polygon(
                [
                    (chest_x, chest_y - size * 1.1),
                    (chest_x + size * 1.2, chest_y + size * 0.8),
                    (chest_x - size * 1.2, chest_y + size * 0.8),
                ],
                second,
            )
    elif pattern == "open_jacket" and facing > -0.1:
        # The shirt shows in a band down the front; from the side only at the leading edge.
        band = cv.px(person.body.shoulder * 0.42) * max(facing, 0.0) + cv.px(0.012)
        front_x = mid_x + cv.px(0.045 * cv.sin) * (1.0 - max(facing, 0.0))
        bottom_y = max(p[1] for p in pts)

        def draw(patch, x0, y0):
            pts_band = np.array(
                [
                    (front_x - band, top_y),
                    (front_x + band, top_y),
                    (front_x + band * 0.8, bottom_y),
                    (front_x - band * 0.8, bottom_y),
                ]
            )
            fixed = np.round((pts_band - [x0, y0]) * _ONE).astype(np.int32).reshape(-1, 1, 2)
            cv2.fillConvexPoly(patch, fixed, c2, cv2.LINE_AA, _SHIFT)

        cv.clipped_pattern(pts, draw)


def _draw_carried(cv: _Canvas, person: PersonAppearance, hand: Vec3, shade: float) -> None:
    colour = _shade(person.carried_colour, shade)
    kind = person.carried
    if kind == "handbag":
        cv.box3d(hand + np.array([0, -0.06, 0.0]), (0.05, 0.04, 0.025), colour, round_=0.4)
    elif kind == "shopping_bag":
        cv.box3d(hand + np.array([0, -0.085, 0.0]), (0.06, 0.07, 0.02), colour, round_=0.1)
    elif kind == "briefcase":
        dark = _shade((0.12, 0.1, 0.09), shade)
        cv.box3d(hand + np.array([0, -0.055, 0.0]), (0.07, 0.05, 0.018), dark, round_=0.15)
    elif kind == "phone":
        cv.box3d(hand + np.array([0, 0.01, 0.01]), (0.012, 0.02, 0.012), (0.08, 0.08, 0.09))


def _draw_back_hair(cv: _Canvas, person: PersonAppearance, j: dict[str, Vec3]) -> None:
    head = j["head"]
    rx = 0.05 * person.body.head
    colour = _shade(person.hair_colour, 0.9)
    if person.hair_length == "ponytail":
        a = head + np.array([0, 0.0, -0.055])
        bt = head + np.array([0, -0.1, -0.075])
        cv.capsule(cv.project(a), cv.project(bt), cv.px(0.018), cv.px(0.011), colour)
        return
    end_y = -0.095 if person.hair_length == "medium" else -0.17
    a = head + np.array([0, 0.0, -0.012])
    bt = head + np.array([0, end_y, -0.03])
    cv.capsule(cv.project(a), cv.project(bt), cv.px(rx * 1.05), cv.px(rx * 0.95), colour)


def _draw_head(cv: _Canvas, person: PersonAppearance, j: dict[str, Vec3], pose: PersonPose):
    head, neck = j["head"], j["neck"]
    hs = person.body.head
    ry = 0.062 * hs
    rx = (0.047 * abs(cv.cos) + 0.056 * abs(cv.sin)) * hs
    skin = person.skin_colour
    cv.capsule(
        cv.project(neck + np.array([0, -0.01, 0])),
        cv.project(head),
        cv.px(0.022),
        cv.px(0.024),
        _shade(skin, 0.85),
    )
    centre = cv.project(head)
    cv.ellipse(centre, (cv.px(rx), cv.px(ry)), skin)
    # Hair: a cap sector over the top and the back of the head; all hair from behind.
    hair = person.hair_colour
    hr = (cv.px(rx * 1.06), cv.px(ry * 1.05))
    if cv.cos < -0.35:
        cv.ellipse(centre, hr, hair)
    else:
        face_dir = 90.0 - 60.0 * cv.sin  # image angle of the face's centre (90 = straight down)
        half = 62.0 + 18.0 * max(cv.cos, 0.0)
        start = face_dir + half
        cv.ellipse(centre, hr, hair, 0.0, start, face_dir - half + 360.0)
        if cv.cos > 0.3 and person.hair_length in ("short", "medium"):
            # forehead line sits lower than the ear line: a shallow fringe
            cv.ellipse(
                (centre[0], centre[1] - cv.px(ry * 0.35)),
                (hr[0] * 0.95, hr[1] * 0.45),
                hair,
                0.0,
                180.0,
                360.0,
            )
    if person.headwear == "cap" or person.headwear == "beanie":
        col = person.headwear_colour
        cap_r = (cv.px(rx * 1.12), cv.px(ry * (0.95 if person.headwear == "cap" else 1.0)))
        cy = centre[1] - cv.px(ry * (0.12 if person.headwear == "cap" else 0.05))
        cv.ellipse((centre[0], cy), cap_r, col, 0.0, 180.0, 360.0)
        if person.headwear == "cap" and cv.cos > -0.6:
            fwd = np.array([0.0, 0.0, 1.0])
            brim_a = head + np.array([0, 0.012, 0.0]) + fwd * 0.03
            brim_b = head + np.array([0, 0.008, 0.0]) + fwd * 0.085
            cv.capsule(
                cv.project(brim_a), cv.project(brim_b), cv.px(0.012), cv.px(0.01), _shade(col, 0.8)
            )
    del pose


def _finish(cv: _Canvas, pose: PersonPose) -> tuple[np.ndarray, np.ndarray]:
    """Soft shading (top-lit vertical gradient, side light, darker rims), then 2x -> 1x."""
    rgb = cv.rgb.astype(np.float32) * (1.0 / 255.0)
    alpha = cv.alpha.astype(np.float32) * (1.0 / 255.0)
    ys = np.nonzero(alpha.max(1) > 0)[0]
    if ys.size:
        top, bot = ys[0], ys[-1] + 1
        t = (np.arange(cv.h, dtype=np.float32) - top) / max(bot - top, 1)
        vertical = 1.12 - 0.32 * np.clip(t, 0.0, 1.0)
        xs = (np.arange(cv.w, dtype=np.float32) - cv.ox) / max(cv.scale * 0.15, 1.0)
        horizontal = 1.0 + 0.1 * pose.light_side * np.clip(xs, -1.0, 1.0)
        rim = cv2.GaussianBlur(alpha, (0, 0), max(cv.scale * 0.012, 1.0))
        shade = vertical[:, None] * horizontal[None, :] * (0.72 + 0.28 * np.clip(rim * 1.4, 0, 1))
        rgb *= shade[..., None]
    small = (cv.w // SUPERSAMPLE, cv.h // SUPERSAMPLE)
    # Area-average colour weighted by coverage, so dark empty canvas does not bleed into edges.
    premult = cv2.resize(rgb * alpha[..., None], small, interpolation=cv2.INTER_AREA)
    a_small = cv2.resize(alpha, small, interpolation=cv2.INTER_AREA)
    out = premult / np.maximum(a_small, 1e-4)[..., None]
    return np.clip(out, 0.0, 1.0), a_small

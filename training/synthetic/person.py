"""Who a synthetic pedestrian is: clothing, body, hair, accessories and gait.

Every attribute is drawn from a small, realistic distribution (dark and desaturated clothing is
common, bright colours are rare), so each single attribute value is shared by many persons and
only the *combination* identifies someone -- as in real surveillance footage, where half the
crowd wears black or navy. Colours are sRGB floats in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

Colour = tuple[float, float, float]


def _rgb(hex_code: str) -> Colour:
    value = int(hex_code.lstrip("#"), 16)
    return ((value >> 16) / 255.0, ((value >> 8) & 255) / 255.0, (value & 255) / 255.0)


# (name, hex, weight): weights follow what one sees in a crowd (dark and neutral dominate).
TOP_PALETTE: tuple[tuple[str, str, float], ...] = (
    ("black", "#1e1e20", 10.0),
    ("charcoal", "#3a3b3f", 7.0),
    ("navy", "#1f2a44", 7.0),
    ("grey", "#7c7e82", 5.0),
    ("light_grey", "#b4b5b3", 3.0),
    ("off_white", "#dcd8cc", 4.0),
    ("beige", "#bda98a", 3.0),
    ("khaki", "#8f8462", 2.5),
    ("olive", "#55583a", 2.5),
    ("brown", "#5a4030", 3.0),
    ("camel", "#a0784c", 2.0),
    ("burgundy", "#5e2330", 2.5),
    ("brick_red", "#8e3b32", 2.0),
    ("denim", "#4a5f80", 3.0),
    ("sky_blue", "#8aa4c0", 2.0),
    ("royal_blue", "#34488f", 1.5),
    ("forest_green", "#2e4a38", 2.0),
    ("teal", "#2f6266", 1.5),
    ("mustard", "#b08d35", 1.5),
    ("dusty_pink", "#c4959a", 1.5),
    ("plum", "#4f3350", 1.5),
    ("rust_orange", "#b0603a", 1.0),
    ("red", "#a3282c", 1.0),
)

BOTTOM_PALETTE: tuple[tuple[str, str, float], ...] = (
    ("dark_jeans", "#2b3448", 9.0),
    ("mid_jeans", "#46597a", 7.0),
    ("light_jeans", "#7487a3", 3.0),
    ("black", "#1c1c1e", 9.0),
    ("charcoal", "#3b3c40", 4.0),
    ("grey", "#76787c", 3.0),
    ("khaki", "#a08f6c", 3.0),
    ("beige", "#c3b59a", 2.0),
    ("brown", "#4f3a2c", 2.5),
    ("navy", "#22283b", 3.0),
    ("olive", "#4f5237", 1.5),
    ("off_white", "#d6d2c6", 1.0),
    ("burgundy", "#552631", 0.8),
)

SHOE_PALETTE: tuple[tuple[str, str, float], ...] = (
    ("black", "#161617", 10.0),
    ("white", "#d8d8d4", 5.0),
    ("brown", "#4a3222", 4.0),
    ("grey", "#6c6d70", 2.5),
    ("navy", "#23293a", 2.0),
    ("tan", "#a27a52", 1.5),
    ("red", "#8a2a2a", 0.7),
)

SKIN_TONES: tuple[tuple[str, str, float], ...] = (
    ("very_light", "#f1d3bf", 2.0),
    ("light", "#e3b899", 3.0),
    ("light_medium", "#d09f7b", 3.0),
    ("medium", "#b37f5a", 2.5),
    ("tan", "#9a6a48", 2.0),
    ("brown", "#7a4f34", 2.0),
    ("dark", "#553726", 1.5),
)

HAIR_COLOURS: tuple[tuple[str, str, float], ...] = (
    ("black", "#1a1614", 8.0),
    ("dark_brown", "#35261c", 7.0),
    ("brown", "#5a3f2a", 4.0),
    ("light_brown", "#7e5f42", 2.0),
    ("blonde", "#b89a6a", 2.0),
    ("auburn", "#6b3424", 1.0),
    ("grey", "#8c8a86", 1.5),
    ("white", "#c8c5bd", 0.5),
)

# Accent colours for bags, hats, prints and the second tone of a pattern.
ACCENT_PALETTE: tuple[tuple[str, str, float], ...] = (
    *TOP_PALETTE,
    ("white", "#e6e4de", 3.0),
    ("yellow", "#c9ab3c", 1.0),
)

PATTERNS: tuple[tuple[str, float], ...] = (
    ("plain", 9.0),
    ("h_stripes", 2.0),
    ("v_stripes", 1.0),
    ("checks", 1.5),
    ("logo", 2.5),
    ("open_jacket", 3.0),
)
LOWER_GARMENTS: tuple[tuple[str, float], ...] = (
    ("trousers", 12.0),
    ("shorts", 1.5),
    ("skirt", 1.5),
    ("long_coat", 2.5),
)
HAIR_LENGTHS: tuple[tuple[str, float], ...] = (
    ("short", 6.0),
    ("medium", 3.0),
    ("long", 3.0),
    ("ponytail", 1.0),
)
HEADWEAR: tuple[tuple[str, float], ...] = (("none", 14.0), ("cap", 2.0), ("beanie", 1.5))
BAGS: tuple[tuple[str, float], ...] = (
    ("none", 8.0),
    ("backpack", 4.0),
    ("shoulder_bag", 3.0),
)
CARRIED: tuple[tuple[str, float], ...] = (
    ("none", 10.0),
    ("handbag", 1.5),
    ("shopping_bag", 1.2),
    ("briefcase", 1.0),
    ("phone", 1.0),
)


def _pick(rng: np.random.Generator, table: tuple[tuple, ...]) -> tuple:
    weights = np.array([row[-1] for row in table], dtype=np.float64)
    return table[int(rng.choice(len(table), p=weights / weights.sum()))]


def _jitter_colour(rng: np.random.Generator, colour: Colour, amount: float) -> Colour:
    """Small per-person shade variation: two 'navy' jackets are never the same navy."""
    brightness = 1.0 + rng.normal(0.0, amount)
    tint = rng.normal(0.0, amount * 0.25, size=3)
    out = np.clip(np.asarray(colour) * brightness + tint * 0.5, 0.02, 0.97)
    return (float(out[0]), float(out[1]), float(out[2]))


def _named(rng: np.random.Generator, table: tuple[tuple[str, str, float], ...], amount: float):
    name, hex_code, _ = _pick(rng, table)
    return name, _jitter_colour(rng, _rgb(hex_code), amount)


@dataclass(frozen=True)
class Body:
    """Proportions as fractions of the person's height (height itself is relative to 1.0)."""

    height: float  # relative stature, about 0.88-1.1
    shoulder: float  # half shoulder width
    hip: float  # half hip width
    depth: float  # half torso depth (seen from the side)
    leg: float  # hip height
    build: float  # limb and waist thickness multiplier
    head: float  # head size multiplier


@dataclass(frozen=True)
class Gait:
    """Walking style: cadence in strides per frame at 25 fps, amplitudes in degrees."""

    cycle_frames: float  # frames per full stride (two steps)
    hip_swing: float
    knee_bend: float
    arm_swing: float
    elbow_bend: float
    bounce: float  # multiplier of the natural vertical bob
    lean: float  # forward torso lean, degrees
    sway: float  # lateral body sway, fraction of height


@dataclass(frozen=True)
class PersonAppearance:
    """Everything that makes one synthetic identity look and move like itself."""

    identity: int
    top: str
    top_colour: Colour
    second: str  # second tone: stripes, checks, print, or the shirt under an open jacket
    second_colour: Colour
    pattern: str
    long_sleeves: bool
    lower: str  # trousers | shorts | skirt | long_coat
    bottom: str
    bottom_colour: Colour
    shoes: str
    shoe_colour: Colour
    skin: str
    skin_colour: Colour
    hair: str
    hair_colour: Colour
    hair_length: str
    headwear: str
    headwear_colour: Colour
    bag: str
    bag_colour: Colour
    bag_side: int  # +1 / -1: which shoulder carries the bag
    carried: str
    carried_colour: Colour
    body: Body
    gait: Gait
    extras: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-friendly attributes (colours rounded) for synthetic.json."""
        data = asdict(self)
        for key, value in list(data.items()):
            if key.endswith("_colour"):
                data[key] = [round(c, 3) for c in value]
        data["body"] = {k: round(v, 3) for k, v in data["body"].items()}
        data["gait"] = {k: round(v, 3) for k, v in data["gait"].items()}
        return data


def sample_person(rng: np.random.Generator, identity: int) -> PersonAppearance:
    """Draw one identity's appearance; the draw order is fixed so a seed means one person."""
    top, top_colour = _named(rng, TOP_PALETTE, 0.08)
    second, second_colour = _named(rng, ACCENT_PALETTE, 0.08)
    pattern = _pick(rng, PATTERNS)[0]
    if second == top:  # a pattern in its own colour would be invisible
        second, second_colour = "off_white", _jitter_colour(rng, _rgb("#dcd8cc"), 0.05)
    long_sleeves = bool(rng.random() < 0.7) or pattern == "open_jacket"
    lower = _pick(rng, LOWER_GARMENTS)[0]
    bottom, bottom_colour = _named(rng, BOTTOM_PALETTE, 0.07)
    shoes, shoe_colour = _named(rng, SHOE_PALETTE, 0.06)
    skin, skin_colour = _named(rng, SKIN_TONES, 0.04)
    hair, hair_colour = _named(rng, HAIR_COLOURS, 0.06)
    hair_length = _pick(rng, HAIR_LENGTHS)[0]
    headwear = _pick(rng, HEADWEAR)[0]
    _, headwear_colour = _named(rng, ACCENT_PALETTE, 0.06)
    bag = _pick(rng, BAGS)[0]
    _, bag_colour = _named(rng, ACCENT_PALETTE[:14], 0.06)
    bag_side = 1 if rng.random() < 0.5 else -1
    carried = _pick(rng, CARRIED)[0]
    _, carried_colour = _named(rng, ACCENT_PALETTE, 0.06)

    build = float(np.clip(rng.normal(1.0, 0.12), 0.78, 1.35))
    body = Body(
        height=float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.1)),
        shoulder=float(np.clip(rng.normal(0.118, 0.01), 0.095, 0.14) * (0.85 + 0.15 * build)),
        hip=float(np.clip(rng.normal(0.082, 0.008), 0.065, 0.1) * (0.8 + 0.2 * build)),
        depth=float(0.055 * build),
        leg=float(np.clip(rng.normal(0.49, 0.018), 0.45, 0.54)),
        build=build,
        head=float(np.clip(rng.normal(1.0, 0.06), 0.88, 1.14)),
    )
    gait = Gait(
        cycle_frames=float(np.clip(rng.normal(27.0, 2.5), 21.0, 34.0)),
        hip_swing=float(np.clip(rng.normal(21.0, 3.5), 13.0, 30.0)),
        knee_bend=float(np.clip(rng.normal(50.0, 7.0), 35.0, 65.0)),
        arm_swing=float(np.clip(rng.normal(20.0, 7.0), 5.0, 38.0)),
        elbow_bend=float(np.clip(rng.normal(18.0, 7.0), 5.0, 40.0)),
        bounce=float(np.clip(rng.normal(0.7, 0.2), 0.3, 1.1)),
        lean=float(np.clip(rng.normal(3.0, 2.5), -2.0, 9.0)),
        sway=float(np.clip(rng.normal(0.008, 0.004), 0.0, 0.018)),
    )
    return PersonAppearance(
        identity=identity,
        top=top,
        top_colour=top_colour,
        second=second,
        second_colour=second_colour,
        pattern=pattern,
        long_sleeves=long_sleeves,
        lower=lower,
        bottom=bottom,
        bottom_colour=bottom_colour,
        shoes=shoes,
        shoe_colour=shoe_colour,
        skin=skin,
        skin_colour=skin_colour,
        hair=hair,
        hair_colour=hair_colour,
        hair_length=hair_length,
        headwear=headwear,
        headwear_colour=headwear_colour,
        bag=bag,
        bag_colour=bag_colour,
        bag_side=bag_side,
        carried=carried,
        carried_colour=carried_colour,
        body=body,
        gait=gait,
        extras={
            "stripe_period": float(rng.uniform(0.028, 0.05)),
            "logo_shape": int(rng.integers(3)),
        },
    )

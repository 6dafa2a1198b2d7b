"""Synthetic pedestrian videos: the project's shared training and benchmark data.

Persons (``person``) are drawn as articulated, shaded bodies (``body``) walking through camera
sites (``scene``); a tracklet (``tracklet``) is what a tracker would crop from one camera, with
that camera's light, optics, noise and compression. ``dataset`` writes everything in the
i-LIDS-VID layout and adds ``python -m training synth``.
"""

from training.synthetic.dataset import (
    GENERATOR_VERSION,
    frame_name,
    generate_dataset,
    make_splits,
    person_name,
    register,
)
from training.synthetic.tracklet import (
    FRAME_SHAPE,
    person_appearance,
    synthesize_tracklet,
    tracklet_info,
    tracklet_length,
)

__all__ = [
    "FRAME_SHAPE",
    "GENERATOR_VERSION",
    "frame_name",
    "generate_dataset",
    "make_splits",
    "person_appearance",
    "person_name",
    "register",
    "synthesize_tracklet",
    "tracklet_info",
    "tracklet_length",
]

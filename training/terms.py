"""The terms that a model's training data come with, recorded in its card (``training.terms``).

A model inherits the terms of every image it learned from: the datasets it was trained on, the
ImageNet weights it started from, and the model it was fine-tuned from. Whoever deploys a model
reads its card, so the card carries them. A dataset states its terms in a README.md at its root,
under a ``## Terms`` heading (as ``../shared/data/cuhk03/README.md`` does); your own ``folder``
data can do the same, and a dataset without one is recorded as "not stated".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from training.sources import Source

SYNTHETIC_TERMS = (
    "the project's own synthetic pedestrians (training/synthetic): no third-party images, "
    "no restriction beyond the project's licence"
)
PRETRAINED_README = Path(__file__).resolve().parent / "pretrained" / "README.md"


def readme_terms(readme: Path) -> str | None:
    """The text under a ``## Terms`` heading, or of a ``- **Terms**:`` item, as one line."""
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    section = re.search(r"^##+ Terms\s*\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    item = re.search(r"^- \*\*Terms\*\*:\s*(.*?)(?=\n\n|\n- \*\*|\Z)", text, re.M | re.S)
    found = section or item
    return " ".join(found.group(1).split()) if found else None


def source_terms(source: Source) -> dict[str, str]:
    """One training source and its terms."""
    if source.dataset == "synthetic":
        terms = SYNTHETIC_TERMS
    else:
        readme = Path(source.root) / "README.md"
        terms = readme_terms(readme) or f"not stated (no '## Terms' section in {readme})"
    return {"data": f"{source.dataset}:{source.root}", "terms": terms}


def inherited_terms(checkpoint: str | Path) -> list[dict[str, str]]:
    """The terms in the card beside a fine-tuning start (``--init-from X.pt`` -> ``X.json``)."""
    card = Path(checkpoint).with_suffix(".json")
    try:
        recorded = json.loads(card.read_text(encoding="utf-8"))["training"]["terms"]
    except (OSError, ValueError, KeyError, TypeError):
        return [{"data": f"weights of {checkpoint}", "terms": f"not stated (no terms in {card})"}]
    via = Path(checkpoint).name
    return [{**entry, "data": f"{entry['data']} (via {via})"} for entry in recorded]


def training_terms(
    sources: Iterable[Source], pretrained: bool = False, init_from: str | None = None
) -> list[dict[str, str]]:
    """Every dataset and weight file a model learned from, each with its terms, once."""
    entries = [source_terms(source) for source in sources]
    if pretrained:
        terms = readme_terms(PRETRAINED_README) or f"see {PRETRAINED_README}"
        entries.append({"data": "ImageNet weights (training/pretrained)", "terms": terms})
    if init_from:
        entries.extend(inherited_terms(init_from))
    unique: dict[str, dict[str, str]] = {}
    for entry in entries:
        unique.setdefault(entry["data"], entry)
    return list(unique.values())

"""A model card names the terms of everything the model learned from (training/terms.py)."""

from __future__ import annotations

import json
from pathlib import Path

from training.sources import Source
from training.terms import PRETRAINED_README, SYNTHETIC_TERMS, readme_terms, training_terms


def _dataset(root: Path, readme: str | None) -> Source:
    root.mkdir(parents=True)
    if readme is not None:
        (root / "README.md").write_text(readme, encoding="utf-8")
    return Source("folder", str(root))


def test_terms_come_from_each_dataset_readme_and_the_imagenet_weights(tmp_path: Path) -> None:
    stated = _dataset(
        tmp_path / "a", "# A\n\nabout\n\n## Terms\n\nResearch use\nonly.\n\n## Other\n\nno\n"
    )
    silent = _dataset(tmp_path / "b", None)
    held_out = Source("folder", str(tmp_path / "a"), part="test")
    entries = training_terms([stated, silent, held_out, Source("synthetic", "x")], pretrained=True)
    by_data = {entry["data"]: entry["terms"] for entry in entries}
    assert by_data[f"folder:{tmp_path / 'a'}"] == "Research use only."
    assert by_data[f"folder:{tmp_path / 'b'}"].startswith("not stated")
    assert by_data["synthetic:x"] == SYNTHETIC_TERMS
    assert "ImageNet" in by_data["ImageNet weights (training/pretrained)"]
    assert len(entries) == 4  # one dataset's two parts are one entry


def test_the_shipped_imagenet_weights_state_their_terms() -> None:
    terms = readme_terms(PRETRAINED_README)
    assert terms is not None and "MIT" in terms and "non-commercial" in terms


def test_fine_tuning_inherits_the_terms_of_the_card_it_starts_from(tmp_path: Path) -> None:
    recorded = [{"data": "folder:cuhk03", "terms": "non-commercial research"}]
    (tmp_path / "start.json").write_text(json.dumps({"training": {"terms": recorded}}))
    inherited = training_terms([], init_from=str(tmp_path / "start.pt"))
    expected = {"data": "folder:cuhk03 (via start.pt)", "terms": "non-commercial research"}
    assert inherited == [expected]
    unknown = training_terms([], init_from=str(tmp_path / "other.pt"))
    assert unknown[0]["terms"].startswith("not stated")

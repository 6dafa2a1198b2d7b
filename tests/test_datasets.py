"""Dataset loaders on tiny fake datasets written in each public release's exact layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from training.datasets import DatasetError, build_dataset, dataset_names, sorted_frames


def write_frames(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.full((8, 4, 3), i * 10 % 255, np.uint8))


# ----------------------------------------------------------------------------- i-LIDS-VID


def make_ilidsvid(root: Path, persons: list[int], ls_set: np.ndarray | None = None) -> Path:
    for camera in (1, 2):
        for person in persons:
            folder = root / "i-LIDS-VID" / "sequences" / f"cam{camera}" / f"person{person:03d}"
            # Frame numbers of different widths and out of lexical order on purpose.
            numbers = [998, 1000, 999, 1002, 1001][: 3 + person % 3]
            write_frames(folder, [f"cam{camera}_person{person:03d}_{n:05d}.png" for n in numbers])
    if ls_set is not None:
        split_dir = root / "train-test people splits"
        split_dir.mkdir(parents=True)
        savemat(str(split_dir / "train_test_splits_ilidsvid.mat"), {"ls_set": ls_set})
    return root


def test_registry_lists_every_dataset() -> None:
    assert set(dataset_names()) == {"ilidsvid", "prid2011", "mars", "folder", "synthetic"}
    with pytest.raises(ValueError, match="unknown dataset 'market'"):
        build_dataset("market", ".")


def test_ilidsvid_official_splits_first_half_test(tmp_path: Path) -> None:
    # Person numbers with gaps, like the real release: the .mat indexes the sorted folders.
    persons = [1, 2, 4, 7, 9, 12]
    ls_set = np.array([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]], dtype=np.float64)
    dataset = build_dataset("ilidsvid", make_ilidsvid(tmp_path, persons, ls_set))
    assert dataset.num_splits == 2
    split = dataset.split(0)
    assert {t.identity for t in split.query} == {1, 2, 4}
    assert {t.identity for t in split.train} == {7, 9, 12}
    assert all(t.camera == 1 for t in split.query) and all(t.camera == 2 for t in split.gallery)
    assert [t.identity for t in split.query] == [t.identity for t in split.gallery]
    assert len(split.train) == 6  # both cameras of each training person
    assert {t.identity for t in dataset.split(1).query} == {12, 9, 7}
    frames = split.query[0].frames
    assert [f.name[-9:-4] for f in frames] == ["00998", "00999", "01000", "01002"]


def test_ilidsvid_root_may_be_the_data_folder_itself(tmp_path: Path) -> None:
    ls_set = np.array([[1, 2, 3, 4]], dtype=np.float64)
    make_ilidsvid(tmp_path, [1, 2, 3, 4], ls_set)
    dataset = build_dataset("ilidsvid", tmp_path / "i-LIDS-VID")
    assert len(dataset.split(0).query) == 2


def test_ilidsvid_random_splits_are_seeded(tmp_path: Path) -> None:
    root = make_ilidsvid(tmp_path, list(range(1, 11)))
    a = build_dataset("ilidsvid", root, splits="random", num_splits=3, seed=5)
    b = build_dataset("ilidsvid", root, splits="random", num_splits=3, seed=5)
    assert a.num_splits == 3
    for i in range(3):
        assert a.split(i) == b.split(i)
        train = {t.identity for t in a.split(i).train}
        test = {t.identity for t in a.split(i).query}
        assert len(test) == 5 and not train & test and train | test == set(range(1, 11))
    assert a.split(0) != a.split(1)


def test_ilidsvid_missing_split_file_names_it_and_the_way_out(tmp_path: Path) -> None:
    root = make_ilidsvid(tmp_path, [1, 2])
    with pytest.raises(DatasetError, match=r"train_test_splits_ilidsvid\.mat.*splits=random"):
        build_dataset("ilidsvid", root)


def test_ilidsvid_errors_name_what_is_expected_where(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset("ilidsvid", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty/sequences.*i-LIDS-VID/sequences/cam1"):
        build_dataset("ilidsvid", tmp_path / "empty")
    root = make_ilidsvid(tmp_path / "ds", [1, 2])
    for f in (root / "i-LIDS-VID/sequences/cam2/person002").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"cam2/person002 has no image files"):
        build_dataset("ilidsvid", root, splits="random")
    bad = np.array([[1, 2, 3]], dtype=np.float64)
    root = make_ilidsvid(tmp_path / "ds2", [1, 2], bad)
    with pytest.raises(DatasetError, match=r"shape \(1, 3\).*2 persons"):
        build_dataset("ilidsvid", root)


def test_synthetic_name_refuses_a_real_ilidsvid_download(tmp_path: Path) -> None:
    root = make_ilidsvid(tmp_path, [1, 2], np.array([[1, 2]], dtype=np.float64))
    with pytest.raises(DatasetError, match="--dataset ilidsvid"):
        build_dataset("synthetic", root)
    (root / "synthetic.json").write_text('{"seed": 3, "persons": []}')
    dataset = build_dataset("synthetic", root)
    assert dataset.info["synthetic"]["seed"] == 3


# ----------------------------------------------------------------------------- PRID-2011


def make_prid(root: Path, cam_a: int, cam_b: int, lengths: dict[int, int]) -> Path:
    for cam, count in (("cam_a", cam_a), ("cam_b", cam_b)):
        for person in range(1, count + 1):
            n = lengths.get(person, 3)
            write_frames(
                root / "prid_2011" / "multi_shot" / cam / f"person_{person:04d}",
                [f"{i:04d}.png" for i in range(1, n + 1)],
            )
    return root


def test_prid_uses_the_shared_persons_only(tmp_path: Path) -> None:
    root = make_prid(tmp_path, cam_a=6, cam_b=9, lengths={})
    dataset = build_dataset("prid2011", root, num_shared_persons=4, num_splits=2)
    split = dataset.split(0)
    everyone = {t.identity for t in (*split.train, *split.query)}
    assert everyone == {1, 2, 3, 4}  # person_0005+ differ between the cameras
    assert len(split.query) == len(split.gallery) == 2
    assert {t.camera for t in split.query} == {1} and {t.camera for t in split.gallery} == {2}


def test_prid_min_frames_keeps_persons_long_enough_in_both_cameras(tmp_path: Path) -> None:
    root = make_prid(tmp_path, cam_a=6, cam_b=6, lengths={2: 30, 3: 25, 5: 22, 6: 21})
    dataset = build_dataset("prid2011", root, num_shared_persons=6, min_frames=21)
    assert dataset.info["num_persons"] == 4
    ids = {t.identity for s in (dataset.split(0),) for t in (*s.train, *s.query, *s.gallery)}
    assert ids == {2, 3, 5, 6}


def test_prid_missing_person_is_named(tmp_path: Path) -> None:
    root = make_prid(tmp_path, cam_a=3, cam_b=2, lengths={})
    with pytest.raises(DatasetError, match=r"cam_b/person_0003"):
        build_dataset("prid2011", root, num_shared_persons=3)


# ----------------------------------------------------------------------------- MARS


def make_mars(root: Path) -> Path:
    """Train: persons 1, 2 (cameras 1, 2). Test: persons 3, 4 in cameras 1-3, a distractor (0)
    and a junk tracklet (-1)."""

    def part(name: str, tracks: list[tuple[int, int, int, int]]) -> None:
        names: list[str] = []
        rows = []
        for pid, cam, track, n in tracks:
            label = "00-1" if pid == -1 else f"{pid:04d}"
            # Frames listed out of order in the folder; names.txt lists them sorted.
            files = [f"{label}C{cam}T{track:04d}F{f:03d}.jpg" for f in range(1, n + 1)]
            write_frames(root / f"bbox_{name}" / label, files[::-1])
            rows.append([len(names) + 1, len(names) + n, pid, cam])
            names.extend(files)
        (root / "info").mkdir(exist_ok=True)
        (root / "info" / f"{name}_name.txt").write_text("\n".join(names) + "\n")
        key = f"track_{name}_info"
        savemat(str(root / "info" / f"tracks_{name}_info.mat"), {key: np.array(rows, np.float64)})

    part("train", [(1, 1, 1, 3), (1, 2, 1, 4), (2, 1, 1, 3), (2, 2, 1, 2)])
    part(
        "test",
        [
            (3, 1, 1, 3),  # row 1: query
            (3, 2, 1, 3),
            (3, 3, 1, 2),
            (4, 2, 1, 4),  # row 4: query
            (4, 1, 1, 3),
            (4, 2, 2, 3),
            (0, 1, 1, 2),  # distractor
            (-1, 3, 1, 2),  # junk
        ],
    )
    savemat(str(root / "info" / "query_IDX.mat"), {"query_IDX": np.array([[1, 4]], np.float64)})
    return root


def test_mars_standard_protocol(tmp_path: Path) -> None:
    dataset = build_dataset("mars", make_mars(tmp_path))
    assert dataset.num_splits == 1
    split = dataset.split(0)
    assert [(t.identity, t.camera) for t in split.query] == [(3, 1), (4, 2)]
    gallery = [(t.identity, t.camera) for t in split.gallery]
    assert gallery == [(3, 2), (3, 3), (4, 1), (4, 2), (0, 1)]  # junk dropped, distractor kept
    assert dataset.info["num_junk_dropped"] == 1 and dataset.info["num_distractors"] == 1
    assert {t.identity for t in split.train} == {1, 2}
    frames = split.query[0].frames
    assert [f.name for f in frames] == [f"0003C1T0001F{i:03d}.jpg" for i in (1, 2, 3)]
    assert frames[0].parent == tmp_path / "bbox_test" / "0003"


def test_mars_two_camera_protocol_draws_two_different_cameras(tmp_path: Path) -> None:
    dataset = build_dataset("mars", make_mars(tmp_path), protocol="two-camera", num_splits=4)
    assert dataset.num_splits == 4
    for i in range(4):
        split = dataset.split(i)
        assert [t.identity for t in split.query] == [3, 4] == [t.identity for t in split.gallery]
        for q, g in zip(split.query, split.gallery, strict=True):
            assert q.camera != g.camera
    assert dataset.split(2) == build_dataset(
        "mars", tmp_path, protocol="two-camera", num_splits=4
    ).split(2)


def test_mars_errors(tmp_path: Path) -> None:
    root = make_mars(tmp_path)
    (root / "info" / "query_IDX.mat").unlink()
    with pytest.raises(DatasetError, match=r"info/query_IDX\.mat"):
        build_dataset("mars", root)
    with pytest.raises(DatasetError, match="protocol"):
        build_dataset("mars", root, protocol="three-camera")
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match=r"other/info.*bbox_train"):
        build_dataset("mars", tmp_path / "other")


# ----------------------------------------------------------------------------- folder


def test_folder_layout_with_single_and_multiple_tracklets(tmp_path: Path) -> None:
    for camera in ("gate", "lobby", "street"):
        for person in ("alice", "bob", "carol", "dave"):
            write_frames(tmp_path / camera / person, ["f10.jpg", "f9.jpg", "f11.jpg"])
    # Two tracklets of alice in the lobby: one folder each.
    write_frames(tmp_path / "lobby" / "alice" / "morning", ["1.png", "2.png"])
    (tmp_path / "lobby" / "alice" / "f10.jpg").unlink()
    (tmp_path / "lobby" / "alice" / "f9.jpg").unlink()
    (tmp_path / "lobby" / "alice" / "f11.jpg").unlink()
    write_frames(tmp_path / "lobby" / "alice" / "evening", ["1.png", "2.png"])

    dataset = build_dataset("folder", tmp_path, query_camera="lobby", num_splits=2)
    assert dataset.info["cameras"] == ["gate", "lobby", "street"]
    assert dataset.info["num_tracklets"] == 13
    split = dataset.split(0)
    assert {t.camera for t in split.query} == {2}
    assert {t.camera for t in split.gallery} == {1, 3}
    test_ids = {t.identity for t in split.query}
    assert len(test_ids) == 2 and not test_ids & {t.identity for t in split.train}
    gate_alice = next(t for t in (*split.train, *split.gallery) if t.camera == 1)
    assert [f.name for f in gate_alice.frames] == ["f9.jpg", "f10.jpg", "f11.jpg"]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="at least two"):
        build_dataset("folder", tmp_path)
    write_frames(tmp_path / "c1" / "p1", ["1.png"])
    (tmp_path / "c2" / "p1").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"c2/p1 has neither frames nor tracklet folders"):
        build_dataset("folder", tmp_path)
    write_frames(tmp_path / "c2" / "p1", ["1.png"])
    with pytest.raises(DatasetError, match="query_camera 'c9'"):
        build_dataset("folder", tmp_path, query_camera="c9")
    with pytest.raises(ValueError, match=r"dataset 'folder'.*colour"):
        build_dataset("folder", tmp_path, colour="red")


def test_frames_sort_by_frame_number_not_name() -> None:
    paths = [Path(n) for n in ("a_10.png", "a_9.png", "a_100.png", "notes.txt", ".hidden_1.png")]
    assert [p.name for p in sorted_frames(paths)] == ["a_9.png", "a_10.png", "a_100.png"]

"""CMC / mAP on hand-computed rankings."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    cmc_at,
    euclidean_distances,
    evaluate_rankings,
    evaluate_rankings_detailed,
    mean_std_over_splits,
)


def _single_shot(distmat: np.ndarray) -> tuple[np.ndarray, float]:
    """iLIDS-VID style: query i is person i in camera 1, gallery j is person j in camera 2."""
    n = distmat.shape[0]
    ids = np.arange(n)
    return evaluate_rankings(distmat, ids, ids, np.zeros(n), np.ones(n), max_rank=n)


def test_single_gallery_shot_cmc_and_map():
    # Query 0: true match ranked 1st; query 1: 2nd; query 2: 3rd.
    distmat = np.array(
        [
            [0.1, 0.5, 0.9],
            [0.2, 0.3, 0.4],
            [0.1, 0.2, 0.3],
        ]
    )
    cmc, m_ap = _single_shot(distmat)
    np.testing.assert_allclose(cmc, [1 / 3, 2 / 3, 1.0])
    # One relevant item each: AP = 1/rank.
    assert m_ap == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_ties_break_by_gallery_index():
    # Query 0 ties between gallery 0 (wrong person 5) and gallery 1 (its match): the lower
    # gallery index ranks first, so the match is at rank 2. Query 1 ties with its match first.
    distmat = np.array([[0.5, 0.5, 0.9], [0.3, 0.3, 0.9]])
    q_pids = np.array([1, 5])
    g_pids = np.array([5, 1, 7])
    result = evaluate_rankings_detailed(
        distmat, q_pids, g_pids, np.zeros(2), np.ones(3), max_rank=3
    )
    np.testing.assert_array_equal(result.per_query_first_match, [1, 0])
    np.testing.assert_allclose(result.cmc, [0.5, 1.0, 1.0])


def test_query_without_match_in_gallery_is_skipped_and_counted():
    distmat = np.array([[0.1, 0.2], [0.3, 0.1]])
    q_pids = np.array([1, 9])  # person 9 never appears in the gallery
    g_pids = np.array([2, 1])
    result = evaluate_rankings_detailed(
        distmat, q_pids, g_pids, np.zeros(2), np.ones(2), max_rank=2
    )
    assert result.num_valid_queries == 1
    assert result.num_skipped_queries == 1
    np.testing.assert_allclose(result.cmc, [0.0, 1.0])
    assert result.mAP == pytest.approx(0.5)


def test_multi_shot_map_hand_computed():
    # Ranked gallery ids for the query (person 1, camera 0): 1, 2, 1, 3, 1 (all other cameras).
    # Hits at ranks 1, 3, 5 -> precisions 1, 2/3, 3/5 -> AP = (1 + 2/3 + 3/5) / 3.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids = np.array([1, 2, 1, 3, 1])
    cmc, m_ap = evaluate_rankings(distmat, np.array([1]), g_pids, np.array([0]), np.full(5, 1), 5)
    assert m_ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    np.testing.assert_allclose(cmc, np.ones(5))


def test_same_identity_same_camera_is_excluded_but_other_identities_in_that_camera_stay():
    # Gallery 0 is the query's own identity in the query's own camera: removed. Gallery 1 is a
    # different person in the same camera: kept (it ranks first, so the true match is rank 2).
    distmat = np.array([[0.0, 0.1, 0.2]])
    g_pids = np.array([1, 4, 1])
    g_cams = np.array([0, 0, 1])
    cmc, m_ap = evaluate_rankings(distmat, np.array([1]), g_pids, np.array([0]), g_cams, 3)
    np.testing.assert_allclose(cmc, [0.0, 1.0, 1.0])
    assert m_ap == pytest.approx(0.5)


def test_junk_gallery_entries_are_ignored():
    distmat = np.array([[0.0, 0.1, 0.2]])
    g_pids = np.array([-1, 0, 1])  # junk first, then a distractor (0), then the match
    cmc, _ = evaluate_rankings(distmat, np.array([1]), g_pids, np.array([0]), np.ones(3), 3)
    np.testing.assert_allclose(cmc, [0.0, 1.0, 1.0])


def test_cmc_padded_to_max_rank_when_gallery_is_small():
    distmat = np.array([[0.2, 0.1]])
    cmc, _ = evaluate_rankings(distmat, np.array([0]), np.array([0, 1]), [0], [1, 1], 50)
    assert cmc.shape == (50,)
    assert cmc[0] == 0.0 and cmc[1] == 1.0 and cmc[-1] == 1.0


def test_all_queries_unmatched_raises():
    with pytest.raises(ValueError, match="no query"):
        evaluate_rankings(np.zeros((1, 1)), np.array([1]), np.array([2]), [0], [1])


def test_cmc_at_and_aggregation_over_splits():
    cmc_a = np.array([0.5, 0.75, 1.0])
    cmc_b = np.array([0.7, 0.85, 1.0])
    assert cmc_at(cmc_a, (1, 2, 20)) == {1: 0.5, 2: 0.75, 20: 1.0}
    summary = mean_std_over_splits([(cmc_a, 0.4), {"cmc": cmc_b, "mAP": 0.6}], ranks=(1, 5))
    assert summary["rank1"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1)}
    assert summary["rank5"]["mean"] == pytest.approx(1.0)
    assert summary["mAP"]["mean"] == pytest.approx(0.5)
    assert summary["num_splits"] == 2


def test_euclidean_distances_match_direct_computation():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    expected = np.linalg.norm(q[:, None, :] - g[None, :, :], axis=2)
    np.testing.assert_allclose(euclidean_distances(q, g), expected, atol=1e-9)

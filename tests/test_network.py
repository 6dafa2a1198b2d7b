"""The ASTPN network: shapes, the paper's equations, masks, the export-friendly pieces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.network import (
    ASTPN,
    ATTENTION_VARIANTS,
    SPP_LEVELS,
    VARIANTS,
    SpatialPyramidPool,
    adaptive_bins,
)

torch.set_num_threads(1)
FRAME = (5, 56, 40)


def frames(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, length, *FRAME, generator=torch.Generator().manual_seed(seed))


def network(variant: str = "astpn", num_identities: int = 0, seed: int = 0) -> ASTPN:
    torch.manual_seed(seed)
    return ASTPN(variant, num_identities=num_identities).eval()


# ----------------------------------------------------------------------------- shapes


def test_conv_map_is_21_by_17_and_spp_gives_2720_features() -> None:
    model = network("astpn")
    assert model.conv_map_size() == (21, 17)
    with torch.no_grad():
        conv = model.conv(torch.zeros(1, *FRAME))
    assert conv.shape == (1, 32, 21, 17)
    assert model.spatial_size == 32 * 85 == 2720
    assert network("rnncnn").spatial_size == 32 * 10 * 8


@pytest.mark.parametrize("variant", VARIANTS)
def test_self_pair_shapes_for_every_variant(variant: str) -> None:
    model = network(variant)
    with torch.no_grad():
        out = model.self_pair(frames(3, 4))
    assert out.embedding_probe.shape == (3, 128)
    assert out.embedding_gallery.shape == (3, 128)
    assert out.attention_probe.shape == (3, 4)
    assert out.attention_gallery.shape == (3, 4)
    assert out.features.shape == (3, 4, 128)


@pytest.mark.parametrize(("batch", "length"), [(1, 1), (2, 1), (1, 2), (2, 17), (1, 128)])
def test_any_batch_and_length(batch: int, length: int) -> None:
    model = network("astpn")
    with torch.no_grad():
        out = model.self_pair(frames(batch, length))
        pair = model(frames(batch, length), frames(batch, 3, seed=1))
    assert out.features.shape == (batch, length, 128)
    assert out.attention_probe.shape == (batch, length)
    assert pair.v_p.shape == pair.v_g.shape == (batch, 128)
    assert pair.a_p.shape == (batch, length) and pair.a_g.shape == (batch, 3)
    assert torch.isfinite(out.embedding_probe).all()


def test_wrong_frame_size_is_refused_with_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"\(B, T, 5, 56, 40\)"):
        network().encode(torch.zeros(1, 2, 5, 64, 48))


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="astpn"):
        ASTPN("lstm")


# ----------------------------------------------------------------------------- attention


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_weights_are_positive_and_sum_to_one(variant: str) -> None:
    model = network(variant)
    with torch.no_grad():
        pair = model(frames(2, 6), frames(2, 9, seed=1))
    for weights in (pair.a_p, pair.a_g):
        assert (weights > 0).all()
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))


def test_attention_matches_equations_3_to_5() -> None:
    model = network("astpn")
    P, G = torch.randn(2, 5, 128), torch.randn(2, 7, 128)
    with torch.no_grad():
        pooled = model.pool(P, G)
    U = model.attention.detach()
    for b in range(2):
        A = torch.tanh(P[b] @ U @ G[b].T)
        a_p = torch.softmax(A.max(dim=1).values, dim=0)
        a_g = torch.softmax(A.max(dim=0).values, dim=0)
        torch.testing.assert_close(pooled.a_p[b], a_p)
        torch.testing.assert_close(pooled.a_g[b], a_g)
        torch.testing.assert_close(pooled.v_p[b], P[b].T @ a_p)
        torch.testing.assert_close(pooled.v_g[b], G[b].T @ a_g)


def test_mean_variants_pool_uniformly() -> None:
    model = network("aspn")
    P, G = torch.randn(2, 4, 128), torch.randn(2, 6, 128)
    pooled = model.pool(P, G)
    torch.testing.assert_close(pooled.v_p, P.mean(dim=1))
    torch.testing.assert_close(pooled.a_g, torch.full((2, 6), 1 / 6))


@pytest.mark.parametrize("variant", VARIANTS)
def test_self_pair_equals_the_pair_with_itself(variant: str) -> None:
    model = network(variant)
    x = frames(2, 5)
    with torch.no_grad():
        single = model.self_pair(x)
        pair = model(x, x)
    torch.testing.assert_close(single.embedding_probe, pair.v_p)
    torch.testing.assert_close(single.embedding_gallery, pair.v_g)
    torch.testing.assert_close(single.attention_probe, pair.a_p)
    torch.testing.assert_close(single.attention_gallery, pair.a_g)
    torch.testing.assert_close(single.features, model.encode(x))


def test_self_pair_roles_differ_only_with_attention() -> None:
    x = frames(1, 6)
    with torch.no_grad():
        attentive = network("astpn").self_pair(x)
        mean = network("aspn").self_pair(x)
    assert not torch.allclose(attentive.attention_probe, attentive.attention_gallery)
    torch.testing.assert_close(mean.embedding_probe, mean.embedding_gallery)


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_permuting_the_gallery_permutes_its_attention_only(variant: str) -> None:
    model = network(variant)
    P, G = torch.randn(2, 5, 128), torch.randn(2, 8, 128)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base = model.pool(P, G)
        permuted = model.pool(P, G[:, perm])
    torch.testing.assert_close(permuted.a_g, base.a_g[:, perm])
    torch.testing.assert_close(permuted.v_g, base.v_g)
    torch.testing.assert_close(permuted.a_p, base.a_p)
    torch.testing.assert_close(permuted.v_p, base.v_p)


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("variant", ["astpn", "aspn"])
def test_padded_pair_equals_the_unpadded_pair(variant: str) -> None:
    model = network(variant)
    lengths_p, lengths_g, padded = (3, 6), (5, 2), 7
    probes = [frames(1, n, seed=10 + i) for i, n in enumerate(lengths_p)]
    galleries = [frames(1, n, seed=20 + i) for i, n in enumerate(lengths_g)]

    def pad(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # Garbage, not zeros, after the real frames: padding must not matter whatever it holds.
        batch = torch.randn(len(items), padded, *FRAME) * 5
        mask = torch.zeros(len(items), padded, dtype=torch.bool)
        for i, item in enumerate(items):
            batch[i, : item.shape[1]] = item[0]
            mask[i, : item.shape[1]] = True
        return batch, mask

    probe, p_mask = pad(probes)
    gallery, g_mask = pad(galleries)
    with torch.no_grad():
        batched = model(probe, gallery, p_mask, g_mask)
        for i in range(2):
            alone = model(probes[i], galleries[i])
            n_p, n_g = lengths_p[i], lengths_g[i]
            torch.testing.assert_close(batched.v_p[i], alone.v_p[0])
            torch.testing.assert_close(batched.v_g[i], alone.v_g[0])
            torch.testing.assert_close(batched.a_p[i, :n_p], alone.a_p[0])
            torch.testing.assert_close(batched.a_g[i, :n_g], alone.a_g[0])
            assert (batched.a_p[i, n_p:] == 0).all() and (batched.a_g[i, n_g:] == 0).all()


def test_bad_masks_are_refused() -> None:
    model = network("astpn")
    P = torch.randn(2, 4, 128)
    with pytest.raises(ValueError, match="bool"):
        model.pool(P, P, p_mask=torch.ones(2, 4))
    empty = torch.tensor([[True] * 4, [False] * 4])
    with pytest.raises(ValueError, match="at least one"):
        model.pool(P, P, g_mask=empty)


# ----------------------------------------------------------------------------- recurrence


def reference_recurrence(model: ASTPN, x: torch.Tensor) -> torch.Tensor:
    """Eq. 2 step by step, from the layer's own weights: o_t = U r_t + W s_{t-1}, s = tanh(o)."""
    b, t = x.shape[:2]
    r = model.spatial(model.conv(x.reshape(b * t, *FRAME))).reshape(b, t, -1)
    U, bias = model.input_layer.weight, model.input_layer.bias
    W = model.recurrent.W.weight
    state = torch.zeros(b, model.feature_dim)
    outputs = []
    for step in range(t):
        o = r[:, step] @ U.T + bias + state @ W.T
        outputs.append(o)
        state = torch.tanh(o)
    return torch.stack(outputs, dim=1)


def test_recurrent_layer_outputs_o_t_before_tanh() -> None:
    model = network("astpn")
    x = frames(2, 6)
    with torch.no_grad():
        model.input_layer.weight.mul_(20)  # drive o_t beyond tanh's range
        got = model.encode(x)
        expected = reference_recurrence(model, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got.abs() > 1).any(), "o_t must be returned before tanh"


def test_scan_path_used_for_export_equals_the_eager_loop() -> None:
    model = network("astpn")
    u = torch.randn(3, 11, 128)
    with torch.no_grad():
        torch.testing.assert_close(
            model.recurrent.forward_scan(u), model.recurrent(u), rtol=1e-6, atol=1e-6
        )
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.recurrent.forward_scan(u)


def test_dropout_is_active_only_in_training() -> None:
    model = network("astpn")
    x = frames(1, 4)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x), model.encode(x))
        model.train()
        assert not torch.allclose(model.encode(x), model.encode(x))


# ----------------------------------------------------------------------------- training


def test_gradients_reach_attention_recurrence_and_convolutions() -> None:
    model = network("astpn", num_identities=4)
    model.train()
    pair = model(frames(2, 4), frames(2, 5, seed=1))
    labels = torch.tensor([0, 3])
    loss = (
        (pair.v_p - pair.v_g).norm(dim=1).mean()
        + nn.functional.cross_entropy(model.classify(pair.v_p), labels)
        + nn.functional.cross_entropy(model.classify(pair.v_g), labels)
    )
    loss.backward()
    for name in ("attention", "conv.layers.0.weight", "conv.layers.6.weight", "recurrent.W.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_classifier_head() -> None:
    model = network("atpn", num_identities=7)
    assert model.classify(torch.randn(3, 128)).shape == (3, 7)
    with pytest.raises(RuntimeError, match="num_identities"):
        network("atpn").classify(torch.randn(3, 128))


# ----------------------------------------------------------------------------- pyramid


@pytest.mark.parametrize("bins", SPP_LEVELS)
@pytest.mark.parametrize("size", [21, 17])
def test_pyramid_bins_cover_the_map_exactly(size: int, bins: int) -> None:
    edges = adaptive_bins(size, bins)
    assert len(edges) == bins
    assert edges[0][0] == 0 and edges[-1][1] == size
    covered = set()
    for (start, end), nxt in zip(edges, [*edges[1:], (size, size)], strict=True):
        assert 0 <= start < end <= size
        assert nxt[0] <= end, "no row or column falls between two bins"
        covered.update(range(start, end))
    assert covered == set(range(size))


def test_exported_pyramid_slices_match_adaptive_max_pool() -> None:
    x = torch.randn(3, 32, 21, 17)
    expected = torch.cat([nn.AdaptiveMaxPool2d(n)(x).flatten(1) for n in SPP_LEVELS], dim=1)
    pyramid = SpatialPyramidPool(21, 17)
    assert pyramid(x).shape == (3, 2720)
    torch.testing.assert_close(pyramid(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(pyramid.forward_static(x), expected, rtol=0, atol=0)

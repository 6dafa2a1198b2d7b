"""The ASTPN network (Xu et al., ICCV 2017): CNN + spatial pyramid pooling + RNN + joint attentive
temporal pooling, and its three ablations.

Shapes follow the paper's Table 1 for a 5 x 56 x 40 input frame (Y, U, V, flow-x, flow-y); see
docs/model.md for the layer table and for every choice the paper leaves open. The frame CNN is a
registered backbone (``model/backbones.py``): the paper's three-layer CNN, or an ImageNet
MobileNetV2; the input (size, colour channels, flow) is the model's
:class:`model.preprocessing.InputSpec`, kept with it in checkpoints and model cards. Colour
normalisation that the spec leaves to the network (``rgb`` input) happens inside ``forward``,
so an exported model cannot drift from its training.

Two things are written with ONNX export in mind:

* the spatial pyramid uses static Python-int bin edges computed once for the known map size
  (``AdaptiveMaxPool2d`` does not export on a map that its bin counts do not divide);
* the recurrence runs as a plain Python loop in eager mode (fast for T = 16 training clips, and
  it supports the recurrent-path dropout) but as ``torch.ops.higher_order.scan`` while
  ``torch.export`` traces it, which the ONNX exporter turns into an ONNX ``Scan`` over a dynamic
  number of steps. A traced Python loop would freeze T at the example's length.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch._higher_order_ops.scan import scan
from torch.nn import functional as F

from model.backbones import build_backbone
from model.choices import ATTENTION_VARIANTS, SPP_VARIANTS, VARIANTS
from model.preprocessing import CHANNELS, PAPER_INPUT, InputSpec

INPUT_CHANNELS = len(CHANNELS)
INPUT_SIZE = PAPER_INPUT.crop_size  # (H, W) of the paper's input
SPP_LEVELS = (8, 4, 2, 1)
#: Per-channel mean and std that ``rgb`` inputs are normalised with inside the network: the
#: ImageNet statistics, which pretrained backbones expect and which suit scratch training too.
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)


class PairPooling(NamedTuple):
    """Temporal pooling of a probe/gallery pair: embeddings (B, N) and attentions (B, T)."""

    v_p: torch.Tensor
    v_g: torch.Tensor
    a_p: torch.Tensor
    a_g: torch.Tensor


class PairScores(NamedTuple):
    """One query re-scored against K candidates (see :meth:`ASTPN.score_pairs`)."""

    distance: torch.Tensor  # (K,) Euclidean distance of the pair's pooled vectors
    query_attention: torch.Tensor  # (K, Tq) the query's attention in each pair
    candidate_attention: torch.Tensor  # (K, Tg) each candidate's attention, 0 on padding


class SelfPairing(NamedTuple):
    """A sequence paired with itself (P = G): the test-time embeddings, one per role.

    ``embedding_probe`` uses the row-wise attention scores of A = tanh(P U P^T),
    ``embedding_gallery`` the column-wise ones; A is not symmetric, so the two differ for the
    attention variants.
    """

    embedding_probe: torch.Tensor  # (B, N)
    embedding_gallery: torch.Tensor  # (B, N)
    attention_probe: torch.Tensor  # (B, T)
    attention_gallery: torch.Tensor  # (B, T)
    features: torch.Tensor  # (B, T, N): the recurrent outputs o_t


def adaptive_bins(size: int, bins: int) -> list[tuple[int, int]]:
    """Bin i spans floor(i*size/bins) .. ceil((i+1)*size/bins), as AdaptiveMaxPool2d and the
    authors' code pool; neighbouring bins overlap by one cell when ``bins`` does not divide
    ``size``."""
    return [(i * size // bins, -(-(i + 1) * size // bins)) for i in range(bins)]


class SpatialPyramidPool(nn.Module):
    """Max-pooling over 8x8, 4x4, 2x2 and 1x1 adaptive bins of a fixed-size map; each level laid
    out like ``AdaptiveMaxPool2d(n)(x).flatten(1)`` (channel-major), finest level first.

    Eager mode uses ``AdaptiveMaxPool2d`` (about 3x faster forward + backward on the CPU than the
    slices, and fewer kernels on a GPU); ``torch.export`` gets the static slices of
    ``forward_static``, which select the same bins, so both give bit-identical results.
    """

    def __init__(self, height: int, width: int, levels: tuple[int, ...] = SPP_LEVELS) -> None:
        super().__init__()
        self.height, self.width, self.levels = height, width, tuple(levels)
        # Python ints, fixed at construction: the exported graph holds constant slices.
        self.row_bins = {n: adaptive_bins(height, n) for n in self.levels}
        self.col_bins = {n: adaptive_bins(width, n) for n in self.levels}

    def bins_per_channel(self) -> int:
        return sum(n * n for n in self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.height, self.width):
            raise ValueError(
                f"spatial pyramid built for {self.height}x{self.width} maps, got "
                f"{tuple(x.shape[-2:])}: the input frames have the wrong size"
            )
        if torch.compiler.is_exporting():
            return self.forward_static(x)
        return torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in self.levels], dim=1)

    def forward_static(self, x: torch.Tensor) -> torch.Tensor:
        """The pyramid as constant slices (exportable). Max is separable, so each level pools
        rows into bins first and then columns: 2n slices per level instead of n^2."""
        pooled = []
        for n in self.levels:
            rows = torch.stack([x[:, :, a:b].amax(dim=2) for a, b in self.row_bins[n]], dim=2)
            cells = torch.stack([rows[:, :, :, a:b].amax(dim=3) for a, b in self.col_bins[n]], 3)
            pooled.append(cells.flatten(1))  # (N, C*n*n)
        return torch.cat(pooled, dim=1)


class RecurrentLayer(nn.Module):
    """Paper eq. 2: o_t = U r_t + W s_{t-1}, s_t = tanh(o_t), s_0 = 0; the layer outputs o_t.

    ``torch.nn.RNN`` would return tanh(o_t). U r_t is computed outside (the 2720 -> N linear layer)
    for all frames at once; this layer adds the recurrent term. While training, dropout is applied
    to the fed-back state s_{t-1}, as on the recurrent path of the authors' code.
    """

    def __init__(self, size: int, dropout: float) -> None:
        super().__init__()
        self.W = nn.Linear(size, size, bias=False)  # the input layer's bias already offsets o_t
        self.dropout = nn.Dropout(dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, T, N) input terms U r_t -> (B, T, N) outputs o_t."""
        if torch.compiler.is_exporting():
            return self.forward_scan(u)
        state = u.new_zeros(u.shape[0], u.shape[2])
        outputs = []
        for t in range(u.shape[1]):
            o = u[:, t] + self.W(self.dropout(state))
            outputs.append(o)
            state = torch.tanh(o)
        return torch.stack(outputs, dim=1)

    def forward_scan(self, u: torch.Tensor) -> torch.Tensor:
        """The same recurrence as a ``scan`` over time: exports to an ONNX Scan with dynamic T.

        Inference only: dropout is not applied here, so it refuses to run in training mode rather
        than silently differ from ``forward``.
        """
        if self.training and self.dropout.p > 0:
            raise RuntimeError("forward_scan is the inference path; call .eval() first")
        weight_t = self.W.weight.t()

        def step(state: torch.Tensor, u_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            o = u_t + state @ weight_t
            return torch.tanh(o), o

        _, outputs = scan(step, torch.zeros_like(u[:, 0]), u, dim=1)
        return outputs


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=1)


def _uniform_weights(features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean pooling written as attention weights, so every variant returns the same outputs."""
    if mask is None:
        ones = torch.ones_like(features[:, :, 0])
        return ones / ones.sum(dim=1, keepdim=True)
    weights = mask.to(features.dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def _check_mask(mask: torch.Tensor | None, features: torch.Tensor, name: str) -> None:
    # Under torch.export the checks would be data-dependent branches; the exported pair scorer
    # builds its masks from lengths and the service checks the lengths.
    if mask is None or torch.compiler.is_exporting():
        return
    if mask.dtype != torch.bool or mask.shape != features.shape[:2]:
        raise ValueError(
            f"{name} must be a bool tensor of shape {tuple(features.shape[:2])} (True = real "
            f"frame), got {mask.dtype} {tuple(mask.shape)}"
        )
    if not bool(mask.any(dim=1).all()):
        raise ValueError(f"{name}: every sequence needs at least one unmasked step")


class ASTPN(nn.Module):
    """One Siamese branch (the branches share weights) plus the joint temporal pooling.

    ``variant``: ``rnncnn`` (max-pool CNN + mean pooling), ``aspn`` (SPP + mean), ``atpn``
    (max-pool + attention), ``astpn`` (SPP + attention). ``num_identities`` sizes the identity
    classifier used by the training loss (0: no classifier, e.g. for export). ``backbone`` names
    the frame CNN (``model.backbones``) and ``input_spec`` the input it takes.
    """

    def __init__(
        self,
        variant: str = "astpn",
        num_identities: int = 0,
        feature_dim: int = 128,
        dropout: float = 0.6,
        backbone: str = "paper",
        input_spec: InputSpec = PAPER_INPUT,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if num_identities < 0 or feature_dim < 1:
            raise ValueError("num_identities must be >= 0 and feature_dim >= 1")
        self.variant = variant
        self.num_identities = num_identities
        self.feature_dim = feature_dim
        self.dropout_p = dropout
        self.backbone = backbone
        self.input_spec = input_spec

        self.conv = build_backbone(backbone)
        channels = self.conv.out_channels
        map_h, map_w = self.conv.map_size(input_spec.crop_size)
        if variant in SPP_VARIANTS:
            self.spatial: nn.Module = SpatialPyramidPool(map_h, map_w, self.conv.spp_levels)
            spatial_size = channels * self.spatial.bins_per_channel()
        else:
            self.spatial = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(1))
            spatial_size = channels * (map_h // 2) * (map_w // 2)
        if spatial_size < 1:
            raise ValueError(f"input {input_spec.crop_size} is too small for {backbone}")
        self.spatial_size = spatial_size
        self.feature_dropout = nn.Dropout(dropout)
        self.input_layer = nn.Linear(spatial_size, feature_dim)  # U r_t of eq. 2
        self.recurrent = RecurrentLayer(feature_dim, dropout)
        self._colour_normalisation(input_spec)

        if variant in ATTENTION_VARIANTS:
            # U of eq. 3. Scaled so that P U G^T starts well inside tanh's linear range: the
            # initial attention is nearly uniform (mean pooling) and sharpens as U learns,
            # instead of starting saturated with vanishing gradients (see docs/model.md).
            self.attention = nn.Parameter(torch.empty(feature_dim, feature_dim))
            nn.init.normal_(self.attention, std=1.0 / math.sqrt(feature_dim))
        else:
            self.register_parameter("attention", None)
        self.classifier = nn.Linear(feature_dim, num_identities) if num_identities else None

    def _colour_normalisation(self, spec: InputSpec) -> None:
        """``rgb`` inputs arrive in [0, 1]: scale and shift them here (mean 0 / std 1 for the
        flow channels, which preprocessing already scaled)."""
        if spec.colour == "rgb":
            mean = torch.tensor([*RGB_MEAN, 0.0, 0.0]).view(1, -1, 1, 1)
            scale = 1.0 / torch.tensor([*RGB_STD, 1.0, 1.0]).view(1, -1, 1, 1)
            self.register_buffer("input_mean", mean, persistent=False)
            self.register_buffer("input_scale", scale, persistent=False)
        else:
            self.input_mean = None
            self.input_scale = None

    def conv_map_size(self) -> tuple[int, int]:
        """(H, W) of the backbone's map for this model's crop (paper: 21 x 17 for 56 x 40)."""
        return self.conv.map_size(self.input_spec.crop_size)

    @property
    def uses_attention(self) -> bool:
        return self.variant in ATTENTION_VARIANTS

    # ------------------------------------------------------------------ one branch

    def frame_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 5, H, W) -> (B, T, N): the per-frame terms U r_t (before the recurrence).

        With a (B, T) ``mask`` only the real frames go through the CNN and padded steps get
        zeros: padding then costs nothing and cannot shift batch-normalisation statistics.
        """
        expected = (INPUT_CHANNELS, *self.input_spec.crop_size)
        if x.dim() != 5 or tuple(x.shape[2:]) != expected:
            raise ValueError(
                f"expected frames of shape (B, T, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )
        b, t = x.shape[0], x.shape[1]
        frames = x.reshape(b * t, *x.shape[2:])
        real = None if mask is None else mask.reshape(b * t)
        if real is not None:
            frames = frames[real]
        if self.input_mean is not None:
            frames = (frames - self.input_mean) * self.input_scale
        if self.training and self.conv.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        u = self.input_layer(self.feature_dropout(self.spatial(self.conv(frames))))
        if real is not None:
            u = u.new_zeros(b * t, self.feature_dim).index_put((real,), u)
        return u.reshape(b, t, self.feature_dim)

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 5, H, W) -> (B, T, N): the recurrent outputs o_t (the rows of P or G).
        ``mask``: see :meth:`frame_features` (padding must follow the real frames)."""
        return self.recurrent(self.frame_features(x, mask))

    # ------------------------------------------------------------------ pooling

    def pool(
        self,
        P: torch.Tensor,
        G: torch.Tensor,
        p_mask: torch.Tensor | None = None,
        g_mask: torch.Tensor | None = None,
    ) -> PairPooling:
        """Temporal pooling of probe features P (B, Tp, N) and gallery features G (B, Tg, N).

        Masks are bool (B, T), True for real steps; padded steps get zero weight and are left
        out of the attention maxima, so a padded batch pools exactly like its unpadded pairs.
        (Padding must follow the real steps: the recurrence is causal, so trailing padding does
        not change the real steps' features.)
        """
        _check_mask(p_mask, P, "p_mask")
        _check_mask(g_mask, G, "g_mask")
        if self.uses_attention:
            a_p, a_g = self.attention_weights(P, G, p_mask, g_mask)
        else:
            a_p, a_g = _uniform_weights(P, p_mask), _uniform_weights(G, g_mask)
        v_p = torch.einsum("bt,btn->bn", a_p, P)
        v_g = torch.einsum("bt,btn->bn", a_g, G)
        return PairPooling(v_p, v_g, a_p, a_g)

    def attention_weights(
        self,
        P: torch.Tensor,
        G: torch.Tensor,
        p_mask: torch.Tensor | None = None,
        g_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 3-5: A = tanh(P U G^T); t_p = row maxima, t_g = column maxima; a = softmax(t)."""
        if self.attention is None:
            raise RuntimeError(f"variant {self.variant} has no attention matrix")
        A = torch.tanh(P @ self.attention @ G.transpose(1, 2))  # (B, Tp, Tg)
        row_scores_from = A if g_mask is None else A.masked_fill(~g_mask[:, None, :], -math.inf)
        col_scores_from = A if p_mask is None else A.masked_fill(~p_mask[:, :, None], -math.inf)
        t_p = row_scores_from.amax(dim=2)
        t_g = col_scores_from.amax(dim=1)
        return _masked_softmax(t_p, p_mask), _masked_softmax(t_g, g_mask)

    # ------------------------------------------------------------------ entry points

    def forward(
        self,
        probe: torch.Tensor,
        gallery: torch.Tensor,
        p_mask: torch.Tensor | None = None,
        g_mask: torch.Tensor | None = None,
    ) -> PairPooling:
        """The Siamese pair: both sequences through the same branch, then joint pooling."""
        return self.pool(self.encode(probe), self.encode(gallery), p_mask, g_mask)

    def self_pair(self, x: torch.Tensor) -> SelfPairing:
        """Test-time embedding of each sequence on its own (P = G), the exported computation."""
        features = self.encode(x)
        pooled = self.pool(features, features)
        return SelfPairing(pooled.v_p, pooled.v_g, pooled.a_p, pooled.a_g, features)

    def score_pairs(
        self,
        query: torch.Tensor,
        candidates: torch.Tensor,
        candidate_lengths: torch.Tensor,
    ) -> PairScores:
        """Pair-wise re-scoring: one query's per-step features (Tq, N) against K candidates'
        (K, Tg, N), each candidate padded after its ``candidate_lengths[k]`` real steps.

        The query takes the probe branch and each candidate the gallery branch of the joint
        attention, as in training; the distance is the Euclidean distance of the two pooled
        vectors, the quantity the contrastive loss trained.
        """
        k, steps = candidates.shape[0], candidates.shape[1]
        lengths = candidate_lengths.to(torch.int64)
        g_mask = torch.arange(steps, device=candidates.device)[None, :] < lengths[:, None]
        probe = query[None].expand(k, -1, -1)
        pooled = self.pool(probe, candidates, None, g_mask)
        distance = torch.linalg.vector_norm(pooled.v_p - pooled.v_g, dim=1)
        return PairScores(distance, pooled.a_p, pooled.a_g)

    def classify(self, v: torch.Tensor) -> torch.Tensor:
        """Identity logits (B, num_identities) of pooled features, for the loss I(v)."""
        if self.classifier is None:
            raise RuntimeError("this model has no identity classifier (num_identities=0)")
        return self.classifier(v)

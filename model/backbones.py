"""Frame CNNs in front of ASTPN's spatial pooling, recurrence and attention.

A backbone maps frames (N, 5, H, W) to a feature map (N, C, h, w); the network pools that map
spatially (pyramid or max-pool), projects it to the recurrent layer's size and pools over time.
Two are registered:

* ``paper``: the paper's three 5x5 tanh convolutions (Table 1), trained from scratch; on a
  56 x 40 crop it gives a 32 x 21 x 17 map, pooled by the 8/4/2/1 pyramid.
* ``mobilenetv2``: MobileNetV2 (Sandler et al., 2018) with ImageNet weights
  (``training/pretrained.py`` loads them), its last downsampling removed (the "last stride 1"
  of re-id practice: a 128 x 64 crop gives an 8 x 4 map rather than 4 x 2), then a 1x1
  convolution to 128 channels so that the 4/2/1 pyramid gives 2688 values per frame, about the
  paper's 2720. The flow channels enter its first convolution through weights that start at
  zero (:class:`Stem`), so training begins from the pretrained colour network and learns what
  flow adds.

Layer names of ``mobilenetv2`` follow the common PyTorch layout (``features.<i>.conv.<j>``), so
ImageNet state dicts load by name (``training/pretrained.py`` maps the stem's).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from model.choices import BACKBONES

COLOUR_INPUTS = 3
FLOW_INPUTS = 2


class Backbone(nn.Module):
    """(N, 5, H, W) -> (N, out_channels, h, w); ``spp_levels`` suit the map it produces."""

    out_channels: int
    spp_levels: tuple[int, ...]
    #: Train in channels-last memory layout (oneDNN's depthwise convolutions run ~1.6x faster
    #: on the CPU that way); inference and export keep the default layout.
    channels_last: bool = False

    def map_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the map for an (H, W) input, computed without running the network."""
        raise NotImplementedError

    def freeze(self, blocks: int) -> None:
        """Keep the first ``blocks`` stages at their (pretrained) weights and statistics."""
        if blocks:
            raise ValueError(f"{type(self).__name__} has no stages to freeze")


_REGISTRY: dict[str, type[Backbone]] = {}


def register_backbone(name: str) -> Callable[[type[Backbone]], type[Backbone]]:
    def decorate(cls: type[Backbone]) -> type[Backbone]:
        if name not in BACKBONES:
            raise ValueError(f"backbone {name!r} is not listed in model.choices.BACKBONES")
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = cls
        return cls

    return decorate


def backbone_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def build_backbone(name: str) -> Backbone:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {backbone_names()}") from None


# ----------------------------------------------------------------------------- the paper's CNN


@register_backbone("paper")
class PaperCNN(Backbone):
    """conv 5x5 (16) - tanh - max-pool 2 - conv 5x5 (32) - tanh - max-pool 2 - conv 5x5 (32) -
    tanh; every convolution with padding 4, as in the authors' code."""

    out_channels = 32
    spp_levels = (8, 4, 2, 1)

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_tanh_conv(COLOUR_INPUTS + FLOW_INPUTS, 16),
            nn.MaxPool2d(2),
            *_tanh_conv(16, 32),
            nn.MaxPool2d(2),
            *_tanh_conv(32, self.out_channels),
        )

    def map_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        h, w = input_size
        for pool in (True, True, False):
            h, w = h + 4, w + 4  # 5x5 kernel, padding 4: +4 per side pair
            if pool:
                h, w = h // 2, w // 2
        return h, w

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _tanh_conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size=5, stride=1, padding=4), nn.Tanh()]


# ----------------------------------------------------------------------------- MobileNetV2

# (expansion t, output channels c, repeats n, stride s) of the paper's Table 2; the stride of
# the 160-channel stage is set to 1 here (see the module docstring).
_MOBILENET_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 1),
    (6, 320, 1, 1),
)
_MOBILENET_STEM = 32
#: Downsampling steps of stride 2 (stem + three stages): the map is the input / 16.
_MOBILENET_DOWNSAMPLES = 1 + sum(1 for _, _, _, s in _MOBILENET_STAGES if s == 2)
MOBILENET_REDUCED_CHANNELS = 128
IMAGENET_CHANNELS = 1280


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    pad = kernel // 2
    return [
        nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]


class Stem(nn.Module):
    """MobileNetV2's first convolution (3x3, stride 2) over colour *and* flow: written as two
    convolutions summed before one batch norm (the same function as one 5-channel
    convolution), so that the pretrained colour part can stay frozen while the flow part, which
    starts at zero, learns."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.colour = nn.Conv2d(COLOUR_INPUTS, out_channels, 3, 2, 1, bias=False)
        self.flow = nn.Conv2d(FLOW_INPUTS, out_channels, 3, 2, 1, bias=False)
        nn.init.zeros_(self.flow.weight)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        colour = self.colour(x[:, :COLOUR_INPUTS])
        return self.act(self.bn(colour + self.flow(x[:, COLOUR_INPUTS:])))


class InvertedResidual(nn.Module):
    """1x1 expansion (unless t = 1) - 3x3 depthwise - 1x1 linear projection, with a residual
    connection when the shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(in_ch, hidden, 1, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, out_ch, 1, 1)
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


@register_backbone("mobilenetv2")
class MobileNetV2(Backbone):
    """MobileNetV2 (width 1.0) up to its 320-channel stage, then 1x1 conv to 128 channels.

    ``imagenet_layout=True`` builds the network as ImageNet classification trained it instead
    (160-channel stage at stride 2, final 1x1 convolution to 1280 channels, no reduction): the
    frame-wise peer embedder of ``training/peer.py``.
    """

    out_channels = MOBILENET_REDUCED_CHANNELS
    spp_levels = (4, 2, 1)
    channels_last = True

    def __init__(self, imagenet_layout: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [Stem(_MOBILENET_STEM)]
        channels = _MOBILENET_STEM
        for expansion, out_ch, repeats, stride in _MOBILENET_STAGES:
            if imagenet_layout and out_ch == 160:
                stride = 2
            for i in range(repeats):
                block = InvertedResidual(channels, out_ch, stride if i == 0 else 1, expansion)
                layers.append(block)
                channels = out_ch
        if imagenet_layout:
            self.out_channels = IMAGENET_CHANNELS
            layers.append(
                nn.Sequential(*_conv_bn(channels, IMAGENET_CHANNELS, 1, 1), nn.ReLU6(inplace=True))
            )
        self.features = nn.Sequential(*layers)
        self.reduce = (
            nn.Identity()
            if imagenet_layout
            else nn.Sequential(*_conv_bn(channels, self.out_channels, 1, 1), nn.ReLU(inplace=True))
        )
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.features[0].flow:
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def map_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        h, w = input_size
        for _ in range(_MOBILENET_DOWNSAMPLES):
            h, w = (h + 1) // 2, (w + 1) // 2  # 3x3, stride 2, padding 1
        return h, w

    def freeze(self, blocks: int) -> None:
        """Freeze the stem's colour part and the first ``blocks - 1`` inverted residuals: their
        weights get no gradient and their batch statistics stay ImageNet's. Early layers see generic
        edges and colours; freezing them costs little accuracy and saves about a third of the
        backward pass at 128 x 64 (docs/training.md)."""
        if not 0 <= blocks <= len(self.features):
            raise ValueError(f"blocks must be in 0..{len(self.features)}, got {blocks}")
        self.frozen = blocks
        for parameter in self.features[:blocks].parameters():
            parameter.requires_grad_(False)
        # What the flow channels carry is not in the ImageNet weights: it always learns.
        self.features[0].flow.weight.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> MobileNetV2:
        super().train(mode)
        for block in self.features[: getattr(self, "frozen", 0)]:
            block.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.reduce(self.features(x))

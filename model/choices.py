"""The model's architecture choices by name, torch-free: command-line help, cards and the service
name them without importing PyTorch (``model/network.py`` and ``model/backbones.py`` build them)."""

from __future__ import annotations

VARIANTS = ("rnncnn", "aspn", "atpn", "astpn")
#: Variants whose temporal pooling is the joint attention of eq. 3-5 (the others average).
ATTENTION_VARIANTS = ("atpn", "astpn")
#: Variants whose CNN ends in spatial pyramid pooling (the others in a 2 x 2 max-pool).
SPP_VARIANTS = ("aspn", "astpn")
#: Frame CNNs (``model/backbones.py``): the paper's three layers, or ImageNet MobileNetV2.
BACKBONES = ("paper", "mobilenetv2")

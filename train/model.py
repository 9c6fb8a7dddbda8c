"""The paper's U-Net (Liu et al. 2022, eqs. 1-4) with the shallow or the deep prediction head.

Encoder: 5 stages of two 3x3 conv + ReLU ("same" padding), 2x2 max-pool between stages.
Decoder: nearest-neighbour x2 upsampling, concatenation with the encoder stage of the same
resolution, two 3x3 conv + ReLU. Channels ``width * (1, 2, 4, 8, 16)``; ``width=64`` is the paper.
The network returns logits; :func:`probabilities` applies the sigmoid the paper puts at the end.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from contract.metadata import SIDE_MULTIPLE

HeadKind = Literal["deep", "shallow"]
INITS = ("alive", "he")  # alive: He-normal + init_head_alive (default); he: the paper's He-normal only
STAGES = 5  # four max-pools between them: the contract's SIDE_MULTIPLE, 2**4


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    width: int = 64
    head: HeadKind = "deep"
    in_channels: int = 3
    arch: str = "aelf-unet"

    def __post_init__(self) -> None:
        if self.head not in ("deep", "shallow"):
            raise ValueError(f"model head must be 'deep' or 'shallow', got {self.head!r}")
        if self.width < 1:
            raise ValueError(f"model width must be a positive number of channels, got {self.width}")
        if self.in_channels < 1:
            raise ValueError(f"model in_channels must be positive, got {self.in_channels}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: data[k] for k in ("width", "head", "in_channels", "arch") if k in data}
        return cls(**known)


def double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """conv(.) of eq. (1): two 3x3 convolutions with ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1),
        nn.ReLU(inplace=True),
    )


def deep_head(in_ch: int, width: int) -> nn.Sequential:
    """The paper's deep prediction head: 3x3 convs (64, 64, 64, 2) with ReLU, then a 1x1 conv to 1.

    The three 64-channel convolutions scale with ``width`` (64 at the paper's width)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, 2, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(2, 1, 1),
    )


class UNet(nn.Module):
    """5-stage U-Net, nearest upsampling, shallow or deep head. Input N x C x H x W with H, W % 16 == 0."""

    def __init__(self, config: ModelConfig | None = None, init: str = "alive") -> None:
        super().__init__()
        self.config = config or ModelConfig()
        w = self.config.width
        channels = [w * 2**i for i in range(STAGES)]  # 64, 128, 256, 512, 1024 at the paper's width
        self.channels = channels
        self.encoder = nn.ModuleList()
        prev = self.config.in_channels
        for ch in channels:
            self.encoder.append(double_conv(prev, ch))
            prev = ch
        # decoder stage l (l = 4..1) fuses encoder stage l with the upsampled decoder stage l+1
        self.decoder = nn.ModuleList(
            double_conv(channels[i] + channels[i + 1], channels[i]) for i in reversed(range(STAGES - 1))
        )
        self.head = deep_head(channels[0], w) if self.config.head == "deep" else nn.Conv2d(channels[0], 1, 1)
        self.reset_parameters(init)

    def reset_parameters(self, init: str = "alive") -> None:
        """He-normal initialisation, as the paper (Keras ``he_normal``: fan-in, ReLU gain); ``init="alive"``
        (the default) then sets the head's output so the first steps cannot close it
        (:func:`init_head_alive`); ``init="he"`` keeps the paper's He-normal everywhere (it can die)."""
        if init not in INITS:
            raise ValueError(f"model init must be one of {', '.join(INITS)}, got {init!r}")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        if init == "alive":
            init_head_alive(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return crack logits, N x 1 x H x W."""
        check_input_shape(tuple(x.shape), self.config.in_channels)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for stage in self.decoder:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = stage(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)


GATE_OPEN = 1.0  # the deep head's 2-channel layer starts at this value at every pixel (open, with margin)
CRACK_PRIOR = 0.05  # share of crack pixels the untrained network predicts (the public sets hold 2-8 %)


def init_head_alive(head: nn.Module) -> None:
    """Initialise the output so that the first Adam steps cannot close the deep head for good.

    Measured at the paper's width (64, lr 1e-4, batch 1, all He-normal): the first step's gradient
    says "less crack everywhere" (96 % of pixels are background). Adam moves every one of the 31 M
    weights by about ``lr`` in that direction (its first steps are sign steps), which shifts both
    channels of the deep head's 2-channel ReLU layer below zero at every pixel within 1-5 steps; from
    then on no gradient reaches any layer below it and the output is one constant. With He-normal
    output weights both channels usually carry the same sign of weight, so both are pushed shut.
    Two changes of the initial values (the layers, their order and their ReLUs stay the paper's):

    * the output 1x1 convolution reads the two channels with opposite signs, ``+1`` and ``-1`` (the
      He-normal scale for a fan-in of 2): one channel is evidence for crack, the other for
      background, as the two channels of the paper's head read in a two-class network. Whichever way
      the first steps push the output, they open one channel while they close the other;
    * its bias starts at the log-odds of :data:`CRACK_PRIOR`, so background pixels do not all pull the
      same way at the first step (the prior initialisation of Lin et al. 2017, "Focal loss").

    The shallow head (one 1x1 convolution, no ReLU after it) cannot close; it gets the prior bias.
    """
    output = head[-1] if isinstance(head, nn.Sequential) else head
    nn.init.constant_(output.bias, math.log(CRACK_PRIOR / (1.0 - CRACK_PRIOR)))
    if output.weight.shape[1] == 2:
        with torch.no_grad():
            output.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        gate = head[-3]
        nn.init.zeros_(gate.weight)
        nn.init.constant_(gate.bias, GATE_OPEN)


def check_input_shape(shape: tuple, in_channels: int = 3) -> None:
    """Raise a ValueError that says what is wrong with an input batch shape."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if len(shape) != 4:
        raise ValueError(f"model input must be N x {in_channels} x H x W, got shape {shape}")
    _, c, h, w = shape
    if c != in_channels:
        raise ValueError(f"model input must have {in_channels} channels, got {c} (shape {shape})")
    if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE or h == 0 or w == 0:
        raise ValueError(
            f"model input sides must be positive multiples of {SIDE_MULTIPLE}, got {h}x{w}; "
            "pad the image (train.data.pad_to_multiple) or tile it"
        )


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Crack probability in (0, 1) from the network's logits (the paper's final sigmoid)."""
    return torch.sigmoid(logits)


def build_model(width: int = 64, head: HeadKind = "deep", in_channels: int = 3, init: str = "alive") -> UNet:
    """Build the U-Net; ``width=64, head='deep'`` is the paper's network (``init``: see :meth:`UNet.reset_parameters`)."""
    return UNet(ModelConfig(width=width, head=head, in_channels=in_channels), init=init)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

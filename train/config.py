"""The training configuration: one typed, validated tree (written to ``config.json`` and into checkpoints)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from contract.backends.flips import FLIP_AXES
from contract.metadata import DEFAULT_TILE_PX, SIDE_MULTIPLE
from train.augment import BORDERS, AugmentConfig
from train.losses import LOSS_NAMES
from train.model import INITS
from train.structures import DEFAULT_TRAINING_FAMILIES, HELD_OUT_FAMILIES, check_families

AMP_MODES = ("auto", "bf16", "fp16", "off")
LR_SCHEDULES = ("constant", "cosine")
SELECT_METRICS = ("ods_f", "f_beta")
SMALL_IMAGE_POLICIES = ("mirror", "pad", "resize")
SOURCE_WEIGHTING = ("balanced", "images")


class ConfigError(ValueError):
    """A training option has an invalid value; the message names the option (as its flag)."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of one training run. Defaults are the paper's protocol (Liu et al. 2022, sec. 4)."""

    data: tuple[str, ...] = ()  # one or more data set folders; a str is split at commas
    source_weights: str = "balanced"  # balanced | images | name=w,name=w (share of each source in an epoch)
    epoch_samples: int = 0  # crops per epoch; 0 = the training images of all sources together
    val_max_images: int = 0  # per source, seeded subset of its validation split; 0 = all
    test_max_images: int = 0  # per source, seeded subset of its test split for the final test; 0 = all
    small_images: str = "mirror"  # images smaller than --size: mirror | pad | resize
    loss: str = "aelf"
    alpha: float = 1.0  # eqs. (6)-(7)
    beta: float = 0.7
    gamma1: float = 0.0  # AELF tilt on the false-positive side (d > 0)
    gamma2: float = 0.0  # AELF tilt on the false-negative side (d <= 0)
    head: str = "deep"
    width: int = 64
    size: int = DEFAULT_TILE_PX  # training crop side, pixels
    epochs: int = 30
    batch: int = 1  # per process
    lr: float = 1e-4
    lr_schedule: str = "constant"  # constant | cosine (from --lr down to --lr-min over all steps of --epochs)
    lr_min: float = 0.0  # the cosine schedule's last learning rate
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    amp: str = "auto"
    tolerance_px: int = 0
    eval_tile: int = 0  # 0: validate and test on whole images; N: through the daemon's tiler at N-px tiles
    eval_flips: int = 1  # validate and test on predictions averaged over N mirrorings (1, 2, 4), as the daemon's model.flips
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    eval_every: int = 1
    max_steps_per_epoch: int = 0  # 0 = the whole training split every epoch
    scale: float = 1.0
    binarize_masks: bool = False
    select: str = "ods_f"
    overlays: int = 4
    augment: bool = True
    rotation_deg: float = AugmentConfig.rotation_deg  # the augmentation's defaults live in AugmentConfig
    shift_frac: float = AugmentConfig.shift_frac
    shear_deg: float = AugmentConfig.shear_deg
    flip: bool = AugmentConfig.flip
    border: str = AugmentConfig.border
    progress: bool = True
    scale_aug_min: float = 1.0  # random rescale of each training image, log-uniform in [min, max]
    scale_aug_max: float = 1.0
    photometric: str = ""  # comma list of train.photometric groups, "all", or "" for none
    synth_fraction: float = 0.0  # share of each epoch drawn from train.synth (hairlines, distractors, negatives)
    synth_structures: float = 0.5  # chance that a generated crop carries a train.structures joint (tiles, formwork...)
    synth_structure_families: str = ",".join(DEFAULT_TRAINING_FAMILIES)  # comma list of train.structures families
    synth_wide: float = 0.0  # chance that a generated crack is wide and deep (an open crack: its inside is crack)
    hard_negative_fraction: float = 0.0  # share of each epoch cut around the --init model's false positives
    hard_negative_threshold: float = 0.3  # probability at which a prediction off every labelled crack is mined
    hard_negative_shape: str = "straight"  # straight: only straight pieces (joints, edges); all: every piece
    negatives: tuple[str, ...] = ()  # folders of crack-free photos (field joints, tiles, formwork): every pixel background
    negatives_fraction: float = 0.1  # share of each epoch cut from --negatives photos (with --negatives only)
    negatives_min_area_px: int = 20  # validation: a held-out negative photo counts as marked with a piece this large (the daemon's measure.min_area_px)
    bce_warmup_steps: int = -1  # BCE for the first N steps; -1 = auto (one epoch for losses on probabilities)
    init: str = ""  # start from these weights (.pt checkpoint or exported .onnx of the same width/head)
    time_budget_min: float = 0.0  # stop cleanly after the step that passes this wall-clock budget; 0 = none
    model_init: str = "alive"  # alive: the head starts open (train.model.init_head_alive); he: the paper's plain He-normal
    clip_grad_norm: float = 1.0  # clip the gradient's global L2 norm before each Adam step; 0 = off
    thin_weight: float = 1.0  # loss weight of the pixels of cracks thinner than 3 px (train.losses.ThinWeightedLoss); 1 = off
    joint_weight: float = 1.0  # loss weight of generated joint/distractor pixels (train.synth.drawn_structures); 1 = off
    cldice_weight: float = 0.0  # weight of the soft clDice centre-line term added to the loss (train.losses.CenterlineLoss); 0 = off

    def __post_init__(self) -> None:
        def fail(flag: str, expected: str) -> None:
            raise ConfigError(f"--{flag.replace('_', '-')} must be {expected}, got {getattr(self, flag)!r}")

        object.__setattr__(self, "data", split_data_list(self.data))
        object.__setattr__(self, "negatives", split_data_list(self.negatives))
        if not self.data:
            fail("data", "one or more data set folders (images/ + masks/), repeated or comma-separated")
        try:
            parse_source_weights(self.source_weights)
        except ValueError as exc:
            raise ConfigError(f"--source-weights: {exc}") from None
        if self.small_images not in SMALL_IMAGE_POLICIES:
            fail("small_images", f"one of {', '.join(SMALL_IMAGE_POLICIES)}")
        if not (0 < self.scale_aug_min <= self.scale_aug_max and math.isfinite(self.scale_aug_max)):
            fail("scale_aug_min", "a positive range, --scale-aug-min <= --scale-aug-max")
        if not 0.0 <= self.synth_fraction < 1.0:
            fail("synth_fraction", "a fraction in [0, 1)")
        if not 0.0 <= self.synth_structures <= 1.0:
            fail("synth_structures", "a probability in [0, 1]")
        if not 0.0 <= self.synth_wide <= 1.0:
            fail("synth_wide", "a probability in [0, 1]")
        try:
            families = check_families(self.structure_families())
        except ValueError as exc:
            raise ConfigError(f"--synth-structure-families: {exc}") from None
        if not families:
            fail("synth_structure_families", "one or more families of train.structures, comma-separated")
        held = [f for f in families if f in HELD_OUT_FAMILIES]
        if held:
            fail("synth_structure_families", f"training families only ({held[0]} is held out for measurement)")
        if not 0.0 <= self.hard_negative_fraction < 1.0 - self.synth_fraction:
            fail("hard_negative_fraction", "a fraction in [0, 1 - --synth-fraction)")
        if self.hard_negative_fraction and not self.init:
            fail("hard_negative_fraction", "0 without --init (the mined false positives are the starting model's)")
        if not (math.isfinite(self.thin_weight) and self.thin_weight >= 1.0):
            fail("thin_weight", ">= 1 (1 = every crack pixel weighs the same)")
        if not (math.isfinite(self.cldice_weight) and self.cldice_weight >= 0.0):
            fail("cldice_weight", ">= 0 (0 = no centre-line term)")
        if not (math.isfinite(self.joint_weight) and self.joint_weight >= 1.0):
            fail("joint_weight", ">= 1 (1 = every background pixel weighs the same)")
        if self.joint_weight != 1.0 and self.synth_fraction <= 0:
            fail("joint_weight", "1 without --synth-fraction (it weighs the joints that the generator draws)")
        extra = self.synth_fraction + self.hard_negative_fraction
        if self.negatives and not 0.0 < self.negatives_fraction < 1.0 - extra:
            fail("negatives_fraction", "a fraction in (0, 1 - --synth-fraction - --hard-negative-fraction) with --negatives")
        if self.negatives_min_area_px < 1:
            fail("negatives_min_area_px", ">= 1 pixel")
        if self.hard_negative_shape not in ("straight", "all"):
            fail("hard_negative_shape", "straight or all")
        if not 0.0 < self.hard_negative_threshold < 1.0:
            fail("hard_negative_threshold", "a probability in (0, 1)")
        if not (self.time_budget_min >= 0 and math.isfinite(self.time_budget_min)):
            fail("time_budget_min", ">= 0 minutes")
        if self.bce_warmup_steps < -1:
            fail("bce_warmup_steps", ">= 0, or -1 for auto")
        for name in ("epoch_samples", "val_max_images", "test_max_images"):
            if getattr(self, name) < 0:
                fail(name, ">= 0")
        if self.loss not in LOSS_NAMES:
            fail("loss", f"one of {', '.join(LOSS_NAMES)}")
        if self.head not in ("deep", "shallow"):
            fail("head", "deep or shallow")
        for name in ("width", "epochs", "batch", "eval_every"):
            if getattr(self, name) < 1:
                fail(name, "a positive whole number")
        if self.size < SIDE_MULTIPLE or self.size % SIDE_MULTIPLE:
            fail("size", f"a multiple of {SIDE_MULTIPLE} (the U-Net pools 4 times)")
        for name in ("workers", "tolerance_px", "max_steps_per_epoch", "overlays"):
            if getattr(self, name) < 0:
                fail(name, ">= 0")
        if self.eval_tile and (self.eval_tile < SIDE_MULTIPLE or self.eval_tile % SIDE_MULTIPLE):
            fail("eval_tile", f"0 (whole images) or a multiple of {SIDE_MULTIPLE}")
        if self.eval_flips not in FLIP_AXES:
            fail("eval_flips", f"one of {', '.join(map(str, FLIP_AXES))} (passes per image or tile)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            fail("lr", "a positive learning rate")
        if self.lr_schedule not in LR_SCHEDULES:
            fail("lr_schedule", f"one of {', '.join(LR_SCHEDULES)}")
        if not 0.0 <= self.lr_min <= self.lr:
            fail("lr_min", "between 0 and --lr")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            fail("scale", "a positive factor")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(name, "a fraction in [0, 1)")
        if self.amp not in AMP_MODES:
            fail("amp", f"one of {', '.join(AMP_MODES)}")
        if self.select not in SELECT_METRICS:
            fail("select", f"one of {', '.join(SELECT_METRICS)}")
        if self.border not in BORDERS:
            fail("border", f"one of {', '.join(BORDERS)}")
        if self.model_init not in INITS:
            fail("model_init", f"one of {', '.join(INITS)}")
        if not (self.clip_grad_norm >= 0 and math.isfinite(self.clip_grad_norm)):
            fail("clip_grad_norm", ">= 0 (0 = no clipping)")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            fail("device", "auto, cpu, cuda or cuda:N")

    def augment_config(self) -> AugmentConfig | None:
        if not self.augment:
            return None
        return AugmentConfig(self.rotation_deg, self.shift_frac, self.shear_deg, self.flip, self.border)

    def learning_rate(self, step: int, total_steps: int) -> float:
        """Adam's learning rate for optimizer step ``step`` (0-based) of a run of ``total_steps`` steps.

        A pure function of the step, so a resumed run continues the schedule exactly (with the same
        --epochs; a resume that changes --epochs stretches the cosine from the step reached)."""
        if self.lr_schedule == "constant" or total_steps <= 1:
            return self.lr
        t = min(max(step, 0), total_steps - 1) / (total_steps - 1)
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1.0 + math.cos(math.pi * t))

    def structure_families(self) -> tuple[str, ...]:
        """The train.structures families the generator may draw (``--synth-structure-families``)."""
        return tuple(f.strip() for f in self.synth_structure_families.split(",") if f.strip())

    def loss_kwargs(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma1": self.gamma1, "gamma2": self.gamma2}

    @property
    def data_name(self) -> str:
        """The data sets' folder names joined by ``+`` (titles, run records)."""
        return "+".join(Path(d).name for d in self.data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"] = list(self.data)
        out["negatives"] = list(self.negatives)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of one option (the CLI flags take their defaults from here)."""
        return cls.__dataclass_fields__[name].default

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def split_data_list(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``("a", "b", "c")`` (blank items dropped)."""
    items = [value] if isinstance(value, str) else list(value)
    return tuple(part.strip() for item in items for part in str(item).split(",") if part.strip())


def parse_source_weights(text: str) -> str | dict[str, float]:
    """``balanced`` / ``images``, or ``name=w,...`` -> {name: w}; raises ValueError naming the bad item."""
    if text in SOURCE_WEIGHTING:
        return text
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name.strip() or not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"expected balanced, images or name=weight,... with weights >= 0, got {item!r} in {text!r}")
        weights[name.strip()] = weight
    if not any(weights.values()):
        raise ValueError(f"at least one weight must be > 0, got {text!r}")
    return weights

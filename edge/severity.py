"""What makes a crack and how bad it is: mask clean-up defaults, the three severity levels and the
width/length rules that assign them (pure, no arrays).

Its own module so that the configuration (edge/config.py) can take its defaults from here without
importing the measurement code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SEVERITY_LEVELS: tuple[str, ...] = ("low", "medium", "high")


class SeverityRuleError(ValueError):
    """A severity limit is not a positive number, or a medium limit exceeds its high limit."""


def severity_rank(severity: str | None) -> int:
    """0 for no crack, 1 low, 2 medium, 3 high: for comparing severities."""
    return 0 if severity is None else SEVERITY_LEVELS.index(severity) + 1


@dataclass(frozen=True)
class MaskCleanup:
    """How a thresholded mask becomes cracks (pixels, 0 = step off); the defaults are the daemon's.

    The one home of these defaults: ``edge.config.MeasureConfig`` and ``edge.measure.measure_cracks`` take
    theirs from here. ``min_length_px``, ``link_gap_px`` and ``straight_min_length_px`` are the inspector's
    notion of a crack (edge.measure's docstring); set all three to 0 for the raw connected components.
    """

    min_area_px: int = 20
    min_length_px: float = 40.0
    link_gap_px: int = 30
    open_px: int = 0
    close_px: int = 0
    # pieces at least this share of which lie on straight lines this long are joints (saw cuts, grout,
    # formwork lines), not cracks (edge.measure.drop_straight; on a piece with such lines, shorter lines
    # parallel or perpendicular to them count too: joint grids, brick bonds); 0 px = off. 105 px: the
    # shortest of 120 / 105 / 90 / 75 px that loses no validation crack tile and drops at most 1 % of the
    # hand-labelled crack pieces >= 40 px (0.84 %; benchmarks/RESULTS.md, "Joint grids and a shorter
    # straight length")
    straight_min_length_px: float = 105.0
    straight_min_share: float = 0.85
    # the straight check also judges each piece by the fainter line it lies in (prob >= threshold x this):
    # a joint the model sees faintly, with confident stretches shorter than the length above, goes too;
    # 1 = off (each piece judged alone)
    straight_support_ratio: float = 0.5
    # pieces that are smooth lines of constant width as long as the above count as lines too (cables,
    # pipes, kerbs, painted arcs: edge.measure.smooth_share): their centre line strays at most this many px
    # (standard deviation) from a straight line over every 31-px stretch; 0 = straight lines only
    smooth_line_tolerance_px: float = 0.75
    # on a piece with straight lines as long as the above, shorter straight stretches of at least this many px
    # count as line too when parallel or perpendicular to them (within 4 degrees): joint grids whose short
    # sides are short, a brick bond's head joints between its bed joints; 0 = long lines only
    straight_grid_segment_px: float = 20.0


@dataclass(frozen=True)
class SeverityRules:
    """Width/length limits that make a crack medium or high severity (else low).

    A crack's severity is the higher of its width class (on ``max_width``) and its length class.
    Millimetre limits apply when the ground sampling distance is known; pixel limits otherwise.
    A length limit of ``None`` disables the length rule. Defaults follow common road-inspection
    practice for hairline (< 1 mm), open (1-3 mm) and wide (>= 3 mm) cracks; the pixel defaults
    assume roughly 1 mm/px. Set them for your camera and surface.
    """

    medium_width_mm: float = 1.0
    high_width_mm: float = 3.0
    medium_length_mm: float | None = 300.0
    high_length_mm: float | None = 1000.0
    medium_width_px: float = 3.0
    high_width_px: float = 8.0
    medium_length_px: float | None = 150.0
    high_length_px: float | None = 600.0

    def __post_init__(self) -> None:
        for unit in ("mm", "px"):
            for kind in ("width", "length"):
                medium = getattr(self, f"medium_{kind}_{unit}")
                high = getattr(self, f"high_{kind}_{unit}")
                for name, value in ((f"medium_{kind}_{unit}", medium), (f"high_{kind}_{unit}", high)):
                    if value is None and kind == "length":
                        continue
                    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                        raise SeverityRuleError(f"severity rule {name} must be a positive number, got {value!r}")
                if medium is not None and high is not None and medium > high:
                    raise SeverityRuleError(
                        f"severity rule medium_{kind}_{unit} ({medium}) must not exceed high_{kind}_{unit} ({high})"
                    )

    def classify(self, max_width_px: float, length_px: float, gsd_mm_per_px: float | None = None) -> str:
        """``"low"``, ``"medium"`` or ``"high"`` for one crack (sizes in pixels; converted with the GSD)."""
        if gsd_mm_per_px is not None:
            width, length, unit = max_width_px * gsd_mm_per_px, length_px * gsd_mm_per_px, "mm"
        else:
            width, length, unit = max_width_px, length_px, "px"
        rank = 1
        if width >= getattr(self, f"high_width_{unit}"):
            rank = 3
        elif width >= getattr(self, f"medium_width_{unit}"):
            rank = 2
        high_len, medium_len = getattr(self, f"high_length_{unit}"), getattr(self, f"medium_length_{unit}")
        if high_len is not None and length >= high_len:
            rank = max(rank, 3)
        elif medium_len is not None and length >= medium_len:
            rank = max(rank, 2)
        return SEVERITY_LEVELS[rank - 1]

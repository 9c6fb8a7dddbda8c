"""Device health figures for the stats topic (Linux sysfs; None where a figure is unreadable)."""

from __future__ import annotations

from pathlib import Path


def read_cpu_temperature_c(thermal_root: Path = Path("/sys/class/thermal")) -> float | None:
    """Highest readable thermal zone temperature in °C (Linux sysfs, millidegrees), None where unreadable."""
    temps = []
    for zone in sorted(thermal_root.glob("thermal_zone*")):
        try:
            temps.append(int((zone / "temp").read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return max(temps) if temps else None

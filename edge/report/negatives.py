"""``python -m edge.report.negatives``: the photos of alerts an inspector found not to be cracks, copied into a
``--negatives`` folder for ``train.run`` (which learns them as background).

An alert from an image folder names its photo (``file``) and the folder (``source``); the report lists each
alert's id beside its photo. Given the alerts (the daemon's JSON lines or outbox database, as the report reads
them: :func:`edge.report.load.load_files`) and the ids judged "not a crack", this copies each of those photos,
once however many alerts it raised, into ``--out`` (created if needed). ``--photos`` says where the photos are
when the survey folder has moved since the daemon ran. A photo already in ``--out`` with the same bytes is left;
one with the same name but other bytes is an error, not an overwrite. Alerts of video or cameras have no photo
(``file`` is null): they are refused by id, since a video frame is not on disk to copy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from edge.report.load import ReportInputError, load_files


class CollectError(ValueError):
    """An id, alert or photo cannot be collected; the message names it."""


def read_ids(ids: list[str], ids_file: Path | None) -> list[str]:
    """Alert ids from ``--ids`` (comma-separated, repeatable) and ``--ids-file`` (one a line, # comments)."""
    found = [part.strip() for item in ids for part in item.split(",") if part.strip()]
    if ids_file is not None:
        if not ids_file.is_file():
            raise CollectError(f"--ids-file {ids_file} does not exist")
        for line in ids_file.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                found.append(line)
    if not found:
        raise CollectError("no alert id given: pass --ids ID,ID or --ids-file FILE (the ids the report lists)")
    return list(dict.fromkeys(found))


def photo_paths(alerts: list[dict], ids: list[str], photos: Path | None) -> list[Path]:
    """The photo of every alert in ``ids`` (each photo once, in the order first named); CollectError naming the
    first id that is not among ``alerts``, has no photo, or whose photo is not on disk."""
    by_id = {alert["alert_id"]: alert for alert in alerts}
    paths: dict[Path, None] = {}
    for alert_id in ids:
        alert = by_id.get(alert_id)
        if alert is None:
            raise CollectError(f"alert {alert_id} is not in the alerts given ({len(by_id)} alerts read)")
        name = alert.get("file")
        if not name:
            raise CollectError(f"alert {alert_id} came from {alert.get('source')!r}, a video or camera: it names no "
                               "photo to collect")
        path = (photos if photos is not None else Path(str(alert.get("source", "")))) / name
        if not path.is_file():
            hint = "" if photos is not None else " (the survey folder has moved? pass --photos FOLDER)"
            raise CollectError(f"photo of alert {alert_id} not found: {path}{hint}")
        paths[path] = None
    return list(paths)


def copy_photos(paths: list[Path], out: Path) -> tuple[int, int]:
    """Copy ``paths`` into ``out``: (copied, already there with the same bytes); CollectError on a clash."""
    out.mkdir(parents=True, exist_ok=True)
    copied = kept = 0
    for path in paths:
        target = out / path.name
        if target.exists():
            if target.read_bytes() == path.read_bytes():
                kept += 1
                continue
            raise CollectError(f"{target} exists and differs from {path}: rename one of them, it would be overwritten")
        shutil.copy2(path, target)
        copied += 1
    return copied, kept


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge.report.negatives",
        description="Copy the photos of alerts that were not cracks (joints, tiles, formwork, shadows) into a folder "
        "for train.run --negatives, so the next model learns them as background.")
    p.add_argument("--alerts", type=Path, nargs="+", required=True,
                   help="the daemon's alerts: JSON-lines files or outbox databases (as python -m edge.report reads)")
    p.add_argument("--ids", action="append", default=[],
                   help="alert ids judged not to be cracks, comma-separated; repeat the flag for more")
    p.add_argument("--ids-file", type=Path, default=None, help="a file of such ids, one a line (# starts a comment)")
    p.add_argument("--photos", type=Path, default=None,
                   help="the folder the photos are in now (default: each alert's source folder)")
    p.add_argument("--out", type=Path, required=True, help="the negatives folder to copy into (created if needed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ids = read_ids(args.ids, args.ids_file)
        records = load_files(list(args.alerts))
        paths = photo_paths(records.alerts, ids, args.photos)
        copied, kept = copy_photos(paths, args.out)
    except (CollectError, ReportInputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(ids)} alerts -> {len(paths)} photos: {copied} copied into {args.out}, {kept} already there; "
          f"train with --negatives {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

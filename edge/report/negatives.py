"""``python -m edge.report.negatives``: the photos of alerts an inspector found not to be cracks, copied into a
``--negatives`` folder for ``train.run`` (which learns them as background).

An alert from an image folder names its photo (``file``) and the folder (``source``); the report's "Not a crack"
ticks save each ticked crack's observations as ``not-cracks.txt``. Given the alerts (the daemon's JSON lines or outbox database, as the report reads
them: :func:`edge.report.load.load_files`, or the fleet database) and the ids judged "not a crack" (the report's
``not-cracks.txt``: ``<alert_id>/<k>`` per crack, or a bare alert id for all its cracks), this copies each of those
photos, once however many alerts it raised, into ``--out`` (created if needed). A photo in which some crack is not
marked is left out and listed: its real crack would be learnt as background. ``--photos`` says where the photos are
when the survey folder has moved since the daemon ran. A photo already in ``--out`` with the same bytes is left;
one with the same name but other bytes is an error, not an overwrite. Alerts of video or cameras have no photo
(``file`` is null): they are left out and listed, since a video frame is not on disk to copy.
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
    """Alert ids from ``--ids`` (comma-separated, repeatable) and ``--ids-file`` (one a line, # comments): each
    ``<alert_id>`` (every crack of that alert) or ``<alert_id>/<k>`` (its crack k, 1-based, as the report's
    not-cracks.txt lists them)."""
    found = [part.strip() for item in ids for part in item.split(",") if part.strip()]
    if ids_file is not None:
        if not ids_file.is_file():
            raise CollectError(f"--ids-file {ids_file} does not exist")
        for line in ids_file.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                found.append(line)
    if not found:
        raise CollectError("no alert id given: pass --ids ID,ID or --ids-file FILE (the report's not-cracks.txt)")
    return list(dict.fromkeys(found))


def marked_cracks(by_id: dict[str, dict], ids: list[str]) -> dict[str, set[int]]:
    """Alert id -> the crack numbers (1-based) marked not a crack; CollectError naming the first id that is not
    among the alerts (``by_id``) or a crack number the alert does not have."""
    marked: dict[str, set[int]] = {}
    for ref in ids:
        alert_id, _, number = ref.partition("/")
        alert = by_id.get(alert_id)
        if alert is None:
            raise CollectError(f"alert {alert_id} is not in the alerts given ({len(by_id)} alerts read)")
        count = len(alert["cracks"])
        if not number:
            marked.setdefault(alert_id, set()).update(range(1, count + 1))
            continue
        if not number.isdigit() or not 1 <= int(number) <= count:
            raise CollectError(f"{ref}: alert {alert_id} has {count} crack(s), numbered 1 to {count}")
        marked.setdefault(alert_id, set()).add(int(number))
    return marked


def photo_paths(alerts: list[dict], ids: list[str], photos: Path | None) -> tuple[list[Path], list[str]]:
    """The photos to collect for the marked ``ids`` (each once, in the order first named) and why each other
    marked photo is left out: a video or camera alert has no photo, and a photo in which any alert of
    ``alerts`` has a crack not marked is kept out of training, since its real crack would be taught as
    background. CollectError for an unknown id or crack, and for a photo not on disk."""
    by_id = {alert["alert_id"]: alert for alert in alerts}
    marked = marked_cracks(by_id, ids)

    def path_of(alert: dict) -> Path:
        return (photos if photos is not None else Path(str(alert.get("source", "")))) / alert["file"]

    by_photo: dict[Path, list[dict]] = {}
    for alert in alerts:
        if alert.get("file"):
            by_photo.setdefault(path_of(alert), []).append(alert)
    paths: dict[Path, None] = {}
    left_out: dict[str, None] = {}
    for alert_id in marked:
        alert = by_id[alert_id]
        if not alert.get("file"):
            left_out[f"alert {alert_id} came from {alert.get('source')!r}, a video or camera: no photo to copy"] = None
            continue
        path = path_of(alert)
        if path in paths:
            continue
        unmarked = [(other["alert_id"], k) for other in by_photo[path] for k in range(1, len(other["cracks"]) + 1)
                    if k not in marked.get(other["alert_id"], ())]
        if unmarked:
            other, k = unmarked[0]
            more = f" (and {len(unmarked) - 1} more)" if len(unmarked) > 1 else ""
            left_out[f"{path.name}: crack {k} of alert {other} is not marked{more}; a photo with a real crack "
                     "would teach that crack as background"] = None
            continue
        if not path.is_file():
            hint = "" if photos is not None else " (the survey folder has moved? pass --photos FOLDER)"
            raise CollectError(f"photo of alert {alert_id} not found: {path}{hint}")
        paths[path] = None
    return list(paths), list(left_out)


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
        "for train.run --negatives, so the next model learns them as background. A photo is copied only when every "
        "crack the daemon found in it is marked; the others are listed as left out.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--alerts", type=Path, nargs="+",
                        help="the daemon's alerts: JSON-lines files or outbox databases (as python -m edge.report reads)")
    source.add_argument("--db", metavar="URL",
                        help="or the fleet database python -m edge.ingest fills (sqlite:///alerts.db, "
                        "postgresql://user@host/db); the photos are on the vehicle, so give --photos")
    p.add_argument("--ids", action="append", default=[],
                   help="alerts judged not to be cracks, comma-separated: ALERT_ID (all its cracks) or ALERT_ID/K "
                   "(its crack K); repeat the flag for more")
    p.add_argument("--ids-file", type=Path, default=None,
                   help="a file of such ids, one a line (# starts a comment): the report's not-cracks.txt")
    p.add_argument("--photos", type=Path, default=None,
                   help="the folder the photos are in now (default: each alert's source folder)")
    p.add_argument("--out", type=Path, required=True, help="the negatives folder to copy into (created if needed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ids = read_ids(args.ids, args.ids_file)
        if args.db:
            from edge.report.db import read_database

            records = read_database(args.db)
        else:
            records = load_files(list(args.alerts))
        paths, left_out = photo_paths(records.alerts, ids, args.photos)
        if not paths:
            raise CollectError("no photo to collect: " + "; ".join(left_out))
        copied, kept = copy_photos(paths, args.out)
    except (CollectError, ReportInputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(ids)} ids -> {len(paths)} photos: {copied} copied into {args.out}, {kept} already there"
          + (f"; {len(left_out)} left out:" if left_out else ""))
    for reason in left_out:
        print(f"  {reason}")
    print(f"train with --negatives {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The inspection report as one self-contained HTML file (no network, no external files).

Snapshots are embedded as JPEG data URIs (downscaled to ``THUMB_WIDTH_PX``) with the crack's box
drawn over them; the track and the cracks are an inline SVG plot (local metres east/north of the
track's centre, cracks coloured by severity); the table sorts on a click on its header (a few lines
of inline JavaScript). The page counts the snapshots that the browser decoded into its footer
(``data-images-loaded``), so a broken image shows there.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone

import cv2
import numpy as np

from edge.report.records import METRES_PER_DEGREE_LAT, CrackGroup, summary_row
from edge.snapshots import SEVERITY_BGR

THUMB_WIDTH_PX = 320
PLOT_W, PLOT_H, PLOT_PAD = 720, 360, 24


def severity_hex(severity: str) -> str:
    """The snapshot overlays' colour of a severity, as CSS hex."""
    b, g, r = SEVERITY_BGR.get(severity, (128, 128, 128))
    return f"#{r:02x}{g:02x}{b:02x}"


def thumbnail_data_uri(jpeg: bytes | None) -> tuple[str, int, int] | None:
    """(data URI, width, height) of the JPEG downscaled to at most THUMB_WIDTH_PX wide; None if undecodable."""
    if not jpeg:
        return None
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    height, width = image.shape[:2]
    if width > THUMB_WIDTH_PX:
        height = max(1, round(height * THUMB_WIDTH_PX / width))
        width = THUMB_WIDTH_PX
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return (f"data:image/jpeg;base64,{base64.b64encode(data.tobytes()).decode()}", width, height) if ok else None


def _fmt(value, digits: int = 1) -> str:
    if value is None or value == "":
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _snapshot_cell(group: CrackGroup, jpeg: bytes | None) -> str:
    thumb = thumbnail_data_uri(jpeg)
    if thumb is None:
        return '<td class="snap">no snapshot</td>'
    uri, _, _ = thumb
    alert, crack = group.worst.alert, group.worst.crack
    fw, fh = alert["frame_size"]["width"], alert["frame_size"]["height"]
    x, y, w, h = crack["bbox"]
    box = (f'<div class="box" style="left:{100 * x / fw:.2f}%;top:{100 * y / fh:.2f}%;width:{100 * w / fw:.2f}%;'
           f'height:{100 * h / fh:.2f}%;border-color:{severity_hex(group.worst.severity)}"></div>')
    return f'<td class="snap"><div class="thumb"><img src="{uri}" alt="snapshot {html.escape(alert["alert_id"])}">{box}</div></td>'


def track_svg(groups: list[CrackGroup], track: list[tuple[float, float]]) -> str:
    """The track (grey line) and the located cracks (dots by severity) in local metres, as inline SVG."""
    points = list(track) + [(g.worst.lat, g.worst.lon) for g in groups if g.worst.lat is not None]
    if not points:
        return '<p class="note">No positions in these alerts: set <code>[geo]</code> in the daemon\'s config.</p>'
    lat0 = sum(p[0] for p in points) / len(points)
    lon0 = sum(p[1] for p in points) / len(points)
    kx = METRES_PER_DEGREE_LAT * math.cos(math.radians(lat0))

    def local(lat: float, lon: float) -> tuple[float, float]:
        return (lon - lon0) * kx, (lat - lat0) * METRES_PER_DEGREE_LAT

    xy = [local(*p) for p in points]
    span = max(max(x for x, _ in xy) - min(x for x, _ in xy), max(y for _, y in xy) - min(y for _, y in xy), 1.0)
    scale = min(PLOT_W - 2 * PLOT_PAD, PLOT_H - 2 * PLOT_PAD) / span  # metres -> px, same on both axes
    cx = (max(x for x, _ in xy) + min(x for x, _ in xy)) / 2
    cy = (max(y for _, y in xy) + min(y for _, y in xy)) / 2

    def screen(lat: float, lon: float) -> tuple[float, float]:
        x, y = local(lat, lon)
        return PLOT_W / 2 + (x - cx) * scale, PLOT_H / 2 - (y - cy) * scale

    parts = [f'<svg id="track" viewBox="0 0 {PLOT_W} {PLOT_H}" width="{PLOT_W}" height="{PLOT_H}" role="img" '
             f'aria-label="track and cracks">', f'<rect width="{PLOT_W}" height="{PLOT_H}" fill="#fafafa"/>']
    if len(track) >= 2:
        path = " ".join(f"{sx:.1f},{sy:.1f}" for sx, sy in (screen(*p) for p in track))
        parts.append(f'<polyline points="{path}" fill="none" stroke="#888" stroke-width="2"/>')
    for n, group in enumerate(groups, 1):
        if group.worst.lat is None:
            continue
        sx, sy = screen(group.worst.lat, group.worst.lon)
        row = summary_row(group)
        parts.append(f'<circle class="crack" cx="{sx:.1f}" cy="{sy:.1f}" r="6" fill="{severity_hex(row["severity"])}" '
                     f'stroke="#222"><title>#{n} {row["severity"]}, {row["frames"]} frame(s), '
                     f'{row["lat"]}, {row["lon"]}</title></circle>')
    metres = 10 ** math.floor(math.log10(max(span / 4, 1e-3)))
    bar = metres * scale
    parts.append(f'<line x1="{PLOT_PAD}" y1="{PLOT_H - 10}" x2="{PLOT_PAD + bar:.1f}" y2="{PLOT_H - 10}" stroke="#000" '
                 f'stroke-width="2"/><text x="{PLOT_PAD}" y="{PLOT_H - 14}" font-size="11">{metres:g} m</text>')
    parts.append(f'<text x="{PLOT_W - 20}" y="18" font-size="12">N ↑</text></svg>')
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em} .meta{color:#555;margin-bottom:1em}
table{border-collapse:collapse;margin-top:1em} th,td{border:1px solid #ccc;padding:4px 6px;text-align:right}
th{background:#eee;cursor:pointer;user-select:none} th.sorted-asc::after{content:" ▲"} th.sorted-desc::after{content:" ▼"}
td.text{text-align:left} .sev{color:#fff;border-radius:3px;padding:1px 6px;font-weight:600}
.thumb{position:relative;display:inline-block;line-height:0} .thumb img{width:240px}
.box{position:absolute;border:2px solid;box-sizing:border-box} .note{color:#555}
.legend span{display:inline-block;margin-right:1em}
"""

_JS = """
function sortBy(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th);
const asc=!th.classList.contains('sorted-asc');t.querySelectorAll('th').forEach(h=>h.classList.remove('sorted-asc','sorted-desc'));
th.classList.add(asc?'sorted-asc':'sorted-desc');const b=t.tBodies[0];const rows=[...b.rows];
const key=r=>{const c=r.cells[i],v=c.dataset.sort!==undefined?c.dataset.sort:c.textContent;const n=parseFloat(v);return isNaN(n)?v:n};
rows.sort((a,c)=>{const x=key(a),y=key(c);const r=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));return asc?r:-r});
rows.forEach(r=>b.appendChild(r))}
document.querySelectorAll('#cracks th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
window.addEventListener('load',()=>{const imgs=[...document.querySelectorAll('#cracks img')];
const ok=imgs.filter(im=>im.complete&&im.naturalWidth>0).length;document.body.dataset.imagesLoaded=ok;
document.getElementById('images').textContent=ok+' of '+imgs.length+' snapshots shown'});
"""

_COLUMNS = (("#", "num"), ("Severity", "sev"), ("Length px", "num"), ("Length mm", "num"), ("Max width px", "num"),
            ("Max width mm", "num"), ("Frames", "num"), ("First seen (UTC)", "text"), ("Latitude", "num"),
            ("Longitude", "num"), ("Position", "text"), ("Snapshot", "text"))


def render_report(groups: list[CrackGroup], track: list[tuple[float, float]], snapshots: dict[str, bytes | None], *,
                  title: str, n_alerts: int, generated_at: datetime | None = None) -> str:
    """The HTML text. ``snapshots``: JPEG bytes by alert_id (None where there is none)."""
    generated_at = generated_at or datetime.now(timezone.utc)
    counts = {s: sum(1 for g in groups if g.worst.severity == s) for s in ("high", "medium", "low")}
    observed = sum(len(g.observations) for g in groups)
    rows = []
    for n, group in enumerate(groups, 1):
        r = summary_row(group)
        sev_rank = {"low": 1, "medium": 2, "high": 3}[r["severity"]]
        where = {"crack": "crack (from frame + offset)", "frame": "frame"}.get(r["position"], "none")
        if r["position_source"]:
            where += f" · {r['position_source']}"
        rows.append(
            f'<tr data-alert-id="{html.escape(r["alert_id"])}"><td data-sort="{n}">{n}</td>'
            f'<td data-sort="{sev_rank}" class="text"><span class="sev" style="background:{severity_hex(r["severity"])}">'
            f'{r["severity"]}</span></td>'
            f'<td>{_fmt(r["length_px"])}</td><td>{_fmt(r["length_mm"])}</td><td>{_fmt(r["max_width_px"])}</td>'
            f'<td>{_fmt(r["max_width_mm"], 2)}</td><td>{r["frames"]}</td><td class="text">{html.escape(r["first_seen"])}</td>'
            f'<td>{_fmt(r["lat"], 6)}</td><td>{_fmt(r["lon"], 6)}</td><td class="text">{where}</td>'
            f'{_snapshot_cell(group, snapshots.get(r["alert_id"]))}</tr>'
        )
    head = "".join(f'<th data-type="{kind}">{name}</th>' for name, kind in _COLUMNS)
    legend = "".join(f'<span><span class="sev" style="background:{severity_hex(s)}">{s}</span> {counts[s]}</span>'
                     for s in ("high", "medium", "low"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body data-images-loaded="0">
<h1>{html.escape(title)}</h1>
<div class="meta">{len(groups)} crack(s) from {observed} observation(s) in {n_alerts} alert(s) ·
generated {generated_at.strftime("%Y-%m-%d %H:%M UTC")}</div>
<div class="legend">{legend}</div>
<h2>Track</h2>
{track_svg(groups, track)}
<h2>Cracks</h2>
<p class="note">The same crack seen in consecutive frames is listed once (its worst frame); "Frames" counts them.
Click a column header to sort.</p>
<table id="cracks"><thead><tr>{head}</tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<p class="note" id="images"></p>
<script>{_JS}</script>
</body></html>
"""

"""The inspection report page: an offline map (Leaflet, bundled) with numbered crack markers linked to
a paged, sortable, filterable table with a crop of each crack that enlarges to the whole frame.

The page is ``report.html`` in a folder beside ``lib/`` (Leaflet and Leaflet.markercluster, copied
from ``edge/report/vendor``) and ``frames/`` (the snapshot JPEGs, one per listed crack); nothing is
fetched from the network unless a tile URL is given. The rows are one JSON document in the page;
the table shows ``PAGE_ROWS`` of them at a time, so a survey of tens of thousands of cracks stays
responsive (sorting and filtering work on the data, not on DOM rows). Without positions the map
is replaced by a note. The page writes how many crop images the browser decoded into
``#images`` (a broken snapshot shows there).

Each row has a "Not a crack" box: the inspector ticks the joints, tile edges and shadows the model took for
cracks; the ticks are kept in the browser (``localStorage``, per report) and "Save" downloads
``not-cracks.txt``, every observation of the ticked cracks as ``<alert_id>/<k>`` one a line, the file that
``python -m edge.report.negatives --ids-file`` reads to collect their photos for training.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from datetime import datetime, timezone
from typing import Any

from edge.snapshots import SEVERITY_BGR

PAGE_ROWS = 50
CLUSTER_ABOVE = 200  # markers are clustered when there are more than this many


def severity_hex(severity: str) -> str:
    """The snapshot overlays' colour of a severity, as CSS hex."""
    b, g, r = SEVERITY_BGR.get(severity, (128, 128, 128))
    return f"#{r:02x}{g:02x}{b:02x}"


def chainage_summary(rows: list[dict[str, Any]], track_length_m: float) -> tuple[float, list[dict[str, Any]]]:
    """Cracks by severity per stretch of the track: (stretch length m, [{from_m, to_m, high, medium, low}])."""
    located = [r for r in rows if r.get("chainage_m") is not None]
    if not located or track_length_m <= 0:
        return 0.0, []
    raw = track_length_m / 10
    step = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(s * step for s in (1, 2, 5, 10) if s * step >= raw)
    bins = [{"from_m": i * step, "to_m": (i + 1) * step, "high": 0, "medium": 0, "low": 0}
            for i in range(int(track_length_m // step) + 1)]
    for r in located:
        bins[min(int(r["chainage_m"] // step), len(bins) - 1)][r["severity"]] += 1
    return step, bins


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1em 0 .4em} .meta{color:#555;margin-bottom:.6em}
table{border-collapse:collapse} th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:middle}
#cracks th{background:#eee;cursor:pointer;user-select:none;position:sticky;top:0}
th.sorted-asc::after{content:" ▲"} th.sorted-desc::after{content:" ▼"}
td.text{text-align:left} .sev{color:#fff;border-radius:3px;padding:1px 6px;font-weight:600}
.num{cursor:pointer;color:#06c;text-decoration:underline} tr.hl td{background:#fff4b3}
.crop{width:160px;height:120px;background-repeat:no-repeat;background-color:#ddd;cursor:zoom-in;position:relative}
.stale{color:#a00;font-weight:600} #map{height:460px;border:1px solid #bbb;background:#f4f4f0}
.pin{border-radius:50%;color:#fff;font:600 11px/22px system-ui;text-align:center;border:2px solid #222;
 width:22px;height:22px;box-sizing:border-box} .pin.stale-pin{border-style:dashed;opacity:.75}
.controls{margin:.5em 0} .controls label{margin-right:1em} .pager button{margin:0 .3em}
#viewer{position:fixed;inset:0;background:rgba(0,0,0,.82);display:none;align-items:center;justify-content:center;z-index:2000}
#viewer.open{display:flex} #viewer figure{margin:0;position:relative;max-width:94vw}
#viewer img{max-width:94vw;max-height:86vh;display:block} #viewer figcaption{color:#fff;margin-top:.4em}
td.nc{text-align:center} tr.notcrack td{background:#eee;color:#888}
#viewer .frame{position:relative;line-height:0} #viewer .box{position:absolute;border:3px solid;box-sizing:border-box;pointer-events:none}
.note{color:#555} .summary td,.summary th{padding:2px 8px}
"""

# Rows are rendered from DATA (the JSON in #report-data) a page at a time; markers link to rows by number.
_JS = r"""
const DATA=JSON.parse(document.getElementById('report-data').textContent);
const ROWS=DATA.rows, PAGE=DATA.page_rows, COLS=DATA.columns;
let view=ROWS.slice(), page=0, sortKey=null, sortAsc=true, imagesOk=0, imagesBad=0;
const NC_KEY='crack-report-not-crack:'+DATA.report_key;let NC=new Set();
try{NC=new Set(JSON.parse(localStorage.getItem(NC_KEY)||'[]'))}catch(e){}
const tbody=document.querySelector('#cracks tbody');
function fmt(v,d){if(v===null||v===undefined||v==='')return '–';return typeof v==='number'?v.toFixed(d):String(v)}
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
function cropStyle(r){if(!r.image)return '';const [x,y,w,h]=r.bbox,fw=r.frame_w,fh=r.frame_h;
 const m=Math.max(24,0.25*Math.max(w,h));let x0=Math.max(0,x-m),y0=Math.max(0,y-m),x1=Math.min(fw,x+w+m),y1=Math.min(fh,y+h+m);
 const s=Math.min(160/(x1-x0),120/(y1-y0));
 return `background-image:url('${r.image}');background-size:${fw*s}px ${fh*s}px;background-position:${-x0*s+(160-(x1-x0)*s)/2}px ${-y0*s+(120-(y1-y0)*s)/2}px`}
function cell(r,c){const v=r[c.key];
 if(c.key==='nc')return `<td class="nc"><input type="checkbox" class="ncb" data-n="${r.n}"${NC.has(r.n)?' checked':''} title="not a crack: a joint, an edge, a shadow"></td>`;
 if(c.key==='n')return `<td><span class="num" data-n="${r.n}" title="show on the map">${r.n}</span></td>`;
 if(c.key==='severity')return `<td class="text"><span class="sev" style="background:${r.colour}">${r.severity}</span></td>`;
 if(c.key==='crop')return r.image?`<td><div class="crop" data-n="${r.n}" style="${cropStyle(r)}" title="click to enlarge"></div></td>`:'<td class="text">no snapshot</td>';
 if(c.key==='gsd')return `<td>${r.gsd_mm_per_px==null?'–':fmt(r.gsd_mm_per_px,3)+(r.gsd_error_mm_per_px==null?'':' ± '+fmt(r.gsd_error_mm_per_px,3))}</td>`;
 if(c.key==='position_age_s')return `<td class="${r.position_stale?'stale':''}">${v==null?'–':fmt(v,1)+(r.position_stale?' stale':'')}</td>`;
 if(c.key==='where')return `<td class="text">${r.lat==null?'none':fmt(r.lat,6)+', '+fmt(r.lon,6)+' ('+esc(r.position)+' · '+esc(r.position_source)+')'}</td>`;
 return `<td class="${c.text?'text':''}">${typeof v==='number'?fmt(v,c.digits):esc(v==null||v===''?'–':v)}</td>`}
function render(){const start=page*PAGE,rows=view.slice(start,start+PAGE);
 tbody.innerHTML=rows.map(r=>`<tr data-n="${r.n}" data-alert-id="${r.alert_id}"${NC.has(r.n)?' class="notcrack"':''}>${COLS.map(c=>cell(r,c)).join('')}</tr>`).join('');
 document.getElementById('page').textContent=view.length?`rows ${start+1}–${start+rows.length} of ${view.length}`:'no crack matches the filter';
 imagesOk=0;imagesBad=0;const want=rows.filter(r=>r.image);if(!want.length)document.getElementById('images').textContent='0 of 0 snapshots shown';
 want.forEach(r=>{const im=new Image();im.onload=()=>{imagesOk++;count(want.length)};im.onerror=()=>{imagesBad++;count(want.length)};im.src=r.image})}
function count(total){if(imagesOk+imagesBad===total){document.getElementById('images').textContent=`${imagesOk} of ${total} snapshots shown`;
 document.body.dataset.imagesLoaded=imagesOk}}
function applyFilter(){const sev=new Set([...document.querySelectorAll('.sevf:checked')].map(e=>e.value));
 const q=document.getElementById('q').value.trim().toLowerCase();
 view=ROWS.filter(r=>sev.has(r.severity)&&(!q||(r.files+' '+r.crack_id+' '+r.alert_id).toLowerCase().includes(q)));
 if(sortKey)sortView();page=0;render();if(window.showMarkers)showMarkers(view)}
function sortView(){const k=sortKey;view.sort((a,b)=>{const x=a[k],y=b[k];let d;
 if(x==null&&y==null)d=0;else if(x==null)d=1;else if(y==null)d=-1;else d=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
 return sortAsc?d:-d})}
document.querySelectorAll('#cracks th').forEach((th,i)=>th.addEventListener('click',()=>{const c=COLS[i];if(!c.sort)return;
 sortAsc=sortKey===c.sort?!sortAsc:true;sortKey=c.sort;document.querySelectorAll('#cracks th').forEach(h=>h.classList.remove('sorted-asc','sorted-desc'));
 th.classList.add(sortAsc?'sorted-asc':'sorted-desc');sortView();page=0;render()}));
document.getElementById('prev').onclick=()=>{if(page>0){page--;render()}};
document.getElementById('next').onclick=()=>{if((page+1)*PAGE<view.length){page++;render()}};
document.querySelectorAll('.sevf').forEach(e=>e.addEventListener('change',applyFilter));
document.getElementById('q').addEventListener('input',applyFilter);
function showRow(n){const i=view.findIndex(r=>r.n===n);if(i<0)return;page=Math.floor(i/PAGE);render();
 const tr=tbody.querySelector(`tr[data-n="${n}"]`);tr.classList.add('hl');tr.scrollIntoView({block:'center'})}
function enlarge(n){const r=ROWS.find(x=>x.n===n);if(!r||!r.image)return;const v=document.getElementById('viewer');
 const img=v.querySelector('img'),box=v.querySelector('.box');img.src=r.image;const [x,y,w,h]=r.bbox;
 Object.assign(box.style,{left:100*x/r.frame_w+'%',top:100*y/r.frame_h+'%',width:100*w/r.frame_w+'%',height:100*h/r.frame_h+'%',borderColor:r.colour});
 v.querySelector('figcaption').textContent=`#${r.n} ${r.severity} · ${r.file||r.source} · frame ${r.frame_index} · ${r.first_seen}`+(r.frames>1?` · seen in ${r.frames} frames: ${r.files}`:'');
 v.classList.add('open')}
function ncText(){const marked=ROWS.filter(r=>NC.has(r.n));
 const one=s=>String(s).replace(/\s+/g,' ');
 const lines=[`# Not cracks, marked in "${one(DATA.title)}" (generated ${DATA.generated}${DATA.origin?', from '+one(DATA.origin):''})`,
  '# every observation of each crack marked, <alert_id>/<crack number>; collect their photos for training with',
  '# python -m edge.report.negatives --alerts <the same alerts> --ids-file not-cracks.txt --out <folder>'];
 marked.forEach(r=>{lines.push(`# #${r.n} ${r.severity} ${r.files||r.source}`);r.observations.split(' ').forEach(o=>lines.push(o))});
 return lines.join('\n')+'\n'}
function ncUpdate(){const b=document.getElementById('save-nc');b.textContent=`Save not-a-crack list (${NC.size})`;b.disabled=!NC.size;
 try{localStorage.setItem(NC_KEY,JSON.stringify([...NC]))}catch(e){}}
document.getElementById('save-nc').onclick=()=>{const a=document.createElement('a');
 a.href=URL.createObjectURL(new Blob([ncText()],{type:'text/plain'}));a.download='not-cracks.txt';document.body.appendChild(a);a.click();
 setTimeout(()=>{URL.revokeObjectURL(a.href);a.remove()},1000)};
tbody.addEventListener('change',e=>{const t=e.target;if(!t.classList.contains('ncb'))return;const n=+t.dataset.n;
 if(t.checked)NC.add(n);else NC.delete(n);t.closest('tr').classList.toggle('notcrack',t.checked);ncUpdate()});
ncUpdate();
document.getElementById('viewer').onclick=()=>document.getElementById('viewer').classList.remove('open');
tbody.addEventListener('click',e=>{const t=e.target;if(t.classList.contains('crop'))enlarge(+t.dataset.n);
 else if(t.classList.contains('num')&&window.focusMarker)focusMarker(+t.dataset.n)});
render();
if(DATA.map&&window.L){const map=L.map('map',{preferCanvas:true,maxZoom:22});window.reportMap=map;
 if(DATA.tile_url)L.tileLayer(DATA.tile_url,{maxZoom:22,maxNativeZoom:19,attribution:DATA.tile_attribution}).addTo(map);
 L.control.scale({imperial:false}).addTo(map);
 const track=DATA.track.map(p=>[p[0],p[1]]);if(track.length>1)L.polyline(track,{color:'#666',weight:3}).addTo(map);
 const markers={};ROWS.forEach(r=>{if(r.lat==null)return;
  const icon=L.divIcon({className:'',html:`<div class="pin${r.position_stale?' stale-pin':''}" style="background:${r.colour}">${r.n}</div>`,iconSize:[22,22],iconAnchor:[11,11]});
  const m=L.marker([r.lat,r.lon],{icon:icon,title:`#${r.n} ${r.severity}${r.position_stale?' (stale position)':''}`});
  m.bindPopup(`<b>#${r.n}</b> ${r.severity}${r.position_stale?' <span class="stale">stale position, '+fmt(r.position_age_s,1)+' s</span>':''}<br>${esc(r.file||r.source)}`);
  m.on('click',()=>showRow(r.n));markers[r.n]=m});
 const cluster=Object.keys(markers).length>DATA.cluster_above&&L.markerClusterGroup?L.markerClusterGroup({maxClusterRadius:40}):L.featureGroup();
 cluster.addTo(map);window.markerLayer=cluster;
 window.showMarkers=rows=>{cluster.clearLayers();const ms=rows.filter(r=>markers[r.n]).map(r=>markers[r.n]);
  if(cluster.addLayers)cluster.addLayers(ms);else ms.forEach(m=>cluster.addLayer(m))};
 window.focusMarker=n=>{const m=markers[n];if(!m)return;const open=()=>{map.setView(m.getLatLng(),Math.max(map.getZoom(),19));m.openPopup()};
  if(cluster.zoomToShowLayer)cluster.zoomToShowLayer(m,open);else open();document.getElementById('map').scrollIntoView()};
 showMarkers(ROWS);const all=track.concat(ROWS.filter(r=>r.lat!=null).map(r=>[r.lat,r.lon]));
 map.fitBounds(L.latLngBounds(all).pad(0.15),{maxZoom:21})}
"""

_COLUMNS = (  # key in the row, header, sort key (None: not sortable), digits, left-aligned text
    ("n", "#", "n", 0, False), ("severity", "Severity", "sev_rank", 0, False), ("crop", "Crack", None, 0, False),
    ("nc", "Not a crack", None, 0, False),
    ("length_mm", "Length mm", "length_mm", 0, False), ("max_width_mm", "Width mm", "max_width_mm", 2, False),
    ("length_px", "Length px", "length_px", 0, False), ("max_width_px", "Width px", "max_width_px", 1, False),
    ("extent_m", "Extent m", "extent_m", 2, False), ("gsd", "GSD mm/px ± error", "gsd_mm_per_px", 3, False),
    ("frames", "Frames", "frames", 0, False), ("file", "File", "file", 0, True),
    ("first_seen", "First seen (UTC)", "first_seen", 0, True), ("where", "Position", "lat", 6, True),
    ("position_age_s", "Position age s", "position_age_s", 1, False), ("chainage_m", "Along track m", "chainage_m", 1, False),
)


def report_key(rows: list[dict[str, Any]]) -> str:
    """A short key of the rows' observations: where the page keeps its "not a crack" ticks (one report's ticks
    never show in another's; a report rebuilt from the same alerts with the same options finds them again)."""
    digest = hashlib.sha256("\n".join(r["observations"] for r in rows).encode()).hexdigest()
    return digest[:16]


def render_report(rows: list[dict[str, Any]], track: list[tuple[float, float, float]], *, title: str, n_alerts: int,
                  n_observations: int, origin: str = "", tile_url: str | None = None, tile_attribution: str = "",
                  generated_at: datetime | None = None) -> str:
    """The HTML text. ``rows``: :func:`edge.report.records.summary_row` dicts plus ``n``, ``image`` (a URL
    relative to the page, or None), ``bbox``, ``frame_w``, ``frame_h``; ``track``: (lat, lon, metres along)."""
    generated_at = generated_at or datetime.now(timezone.utc)
    counts = {s: sum(1 for r in rows if r["severity"] == s) for s in ("high", "medium", "low")}
    stale = sum(1 for r in rows if r.get("position_stale"))
    located = sum(1 for r in rows if r.get("lat") is not None)
    for r in rows:
        r["colour"] = severity_hex(r["severity"])
        r["sev_rank"] = {"low": 1, "medium": 2, "high": 3}.get(r["severity"], 0)
    track_length = track[-1][2] if track else 0.0
    step, bins = chainage_summary(rows, track_length)
    data = {"rows": rows, "page_rows": PAGE_ROWS, "track": [[round(a, 8), round(b, 8)] for a, b, _ in track],
            "map": located > 0, "tile_url": tile_url, "tile_attribution": tile_attribution,
            "cluster_above": CLUSTER_ABOVE, "title": title, "origin": origin,
            "generated": generated_at.strftime("%Y-%m-%d %H:%M UTC"), "report_key": report_key(rows),
            "columns": [{"key": k, "sort": s, "digits": d, "text": t} for k, _, s, d, t in _COLUMNS]}
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    head = "".join(f"<th>{html.escape(name)}</th>" for _, name, *_ in _COLUMNS)
    legend = " ".join(f'<span class="sev" style="background:{severity_hex(s)}">{s}</span> {counts[s]}'
                      for s in ("high", "medium", "low"))
    filters = "".join(f'<label><input type="checkbox" class="sevf" value="{s}" checked> {s} ({counts[s]})</label>'
                      for s in ("high", "medium", "low"))
    chain_rows = "".join(f"<tr><td>{b['from_m']:g}–{b['to_m']:g}</td><td>{b['high']}</td><td>{b['medium']}</td>"
                         f"<td>{b['low']}</td></tr>" for b in bins)
    chain = (f'<h2>Along the track ({track_length:,.0f} m)</h2><table class="summary"><tr><th>metres</th><th>high</th>'
             f"<th>medium</th><th>low</th></tr>{chain_rows}</table>") if bins else ""
    if located:
        map_html = ('<div id="map"></div><p class="note">Numbered markers are the cracks (the table\'s #); a click '
                    "shows the row, a click on a row's # shows the marker. Dashed markers: stale positions. "
                    + ("Background tiles from the given tile URL." if tile_url else
                       "No background map (offline); give --tile-url for one.") + "</p>")
    else:
        map_html = ('<p class="note">No positions in these alerts: set <code>[geo]</code> in the daemon\'s config '
                    "(photos with EXIF GPS are located by default).</p>")
    origin_html = f" · from {html.escape(origin)}" if origin else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="lib/leaflet.css"><link rel="stylesheet" href="lib/MarkerCluster.css">
<link rel="stylesheet" href="lib/MarkerCluster.Default.css"><style>{_CSS}</style></head>
<body data-images-loaded="0">
<h1>{html.escape(title)}</h1>
<div class="meta">{len(rows)} crack(s) from {n_observations} observation(s) in {n_alerts} alert(s){origin_html} ·
{located} located, {stale} with a stale position · generated {generated_at.strftime("%Y-%m-%d %H:%M UTC")}</div>
<div class="legend">{legend}</div>
<h2>Map</h2>
{map_html}
{chain}
<h2>Cracks</h2>
<p class="note">The same crack seen in several frames is one row (its worst frame; "Frames" counts them, "Extent"
spans all of them). Click a header to sort, a crack picture to see its whole frame. Tick "Not a crack" for what the
model took for a crack (a joint, an edge, a shadow) and save the list: <code>python -m edge.report.negatives</code>
turns it into photos the next model learns as background.</p>
<div class="controls">{filters}<label>file / id <input id="q" type="search" size="18"></label>
<span class="pager"><button id="prev">◀</button><span id="page"></span><button id="next">▶</button></span>
<button id="save-nc" title="download not-cracks.txt: the alert ids of the ticked cracks">Save not-a-crack list (0)</button></div>
<table id="cracks"><thead><tr>{head}</tr></thead><tbody></tbody></table>
<p class="note" id="images"></p>
<div id="viewer"><figure><div class="frame"><img alt="whole frame"><div class="box"></div></div><figcaption></figcaption></figure></div>
<script id="report-data" type="application/json">{payload}</script>
<script src="lib/leaflet.js"></script><script src="lib/leaflet.markercluster.js"></script>
<script>{_JS}</script>
</body></html>
"""

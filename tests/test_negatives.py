"""``train.run --negatives``: crack-free photos (the joints of the structures a model inspects) as background —
the folder is read and split, its crops are all background and cut by the crack images' recipe, validation
scores the held-out photos at the epoch's threshold, bad folders are refused by name; and
``edge.report.negatives`` fills such a folder with the photos of the daemon's alerts judged not to be cracks."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from browser import needs_chromium, open_chromium
from conftest import write_small_crackforest

from edge.report.negatives import main as collect_main
from train.config import ConfigError, TrainConfig
from train.data import CropRecipe, DatasetError, TrainCrops, list_samples, load_images
from train.negatives import (
    NegativePhotos,
    NegativeSource,
    flags_a_piece,
    list_negative_images,
    negative_photos,
    open_negatives,
    score_negatives,
)
from train.run import main as run_main
from train.structures import render_structure

TINY = ["--width", "4", "--size", "64", "--workers", "0", "--no-progress", "--lr", "1e-3"]


def write_joint_photos(shared_data: Path, root: Path, count: int = 10) -> Path:
    """``count`` crack-free photos: CrackForest surface patches (80 x 80, far from every labelled crack) with a
    tile grid of train.structures drawn in; flat in ``root`` (no images/ folder)."""
    root.mkdir(parents=True)
    samples = list_samples(shared_data / "crackforest_cfd")
    written = 0
    for stem in sorted(samples):
        data = load_images(samples, [stem])
        image, mask = data.images[0], data.masks[0]
        far = cv2.dilate(mask, np.ones((17, 17), np.uint8)) == 0
        for y in range(0, image.shape[0] - 80, 40):
            for x in range(0, image.shape[1] - 80, 40):
                if written < count and far[y : y + 80, x : x + 80].all():
                    patch = render_structure(image[y : y + 80, x : x + 80].copy(), np.random.default_rng(written),
                                             "tile_grid")
                    cv2.imwrite(str(root / f"joints_{written:02d}.jpg"),
                                cv2.cvtColor(np.clip(patch, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
                    written += 1
        if written == count:
            return root
    raise AssertionError("not enough crack-free patches")


@pytest.fixture(scope="module")
def joints(shared_data, tmp_path_factory) -> Path:
    return write_joint_photos(shared_data, tmp_path_factory.mktemp("neg") / "site_joints")


@pytest.fixture(scope="module")
def tiny_cfd(shared_data, tmp_path_factory) -> Path:
    return write_small_crackforest(shared_data, tmp_path_factory.mktemp("cfd") / "cfd_small")


def test_folder_is_listed_split_and_read_as_background(joints, tmp_path):
    images = list_negative_images(joints)
    assert len(images) == 10 and all(p.suffix == ".jpg" for p in images.values())
    (folder,) = open_negatives([joints], seed=0, val_fraction=0.2)
    assert len(folder.splits.train) == 8 and len(folder.splits.val) == 2 and not folder.splits.test
    assert not set(folder.splits.train) & set(folder.splits.val)
    photos = negative_photos(folder, folder.splits.val)
    assert len(photos) == 2 and [photos.read(i).shape for i in range(2)] == [(80, 80, 3)] * 2
    assert negative_photos(folder, folder.splits.val, scale=0.5).read(0).shape == (40, 40, 3)  # --scale, as crack images
    # an images/ sub-folder is read the same way
    nested = tmp_path / "nested"
    (nested / "images").mkdir(parents=True)
    for path in images.values():
        (nested / "images" / path.name).write_bytes(path.read_bytes())
    assert list(list_negative_images(nested)) == list(images)
    with pytest.raises(DatasetError, match="two --negatives folders are named 'site_joints'"):  # records would collide
        open_negatives([joints, joints], seed=0, val_fraction=0.2)


def test_bad_folders_are_refused_by_name(tmp_path, tiny_cfd):
    with pytest.raises(DatasetError, match="does not exist"):
        list_negative_images(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    with pytest.raises(DatasetError, match=f"{empty}.*holds no image files"):
        list_negative_images(empty)
    with pytest.raises(DatasetError, match="masks/ folder: a labelled data set belongs in --data"):
        list_negative_images(tiny_cfd)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "wall_01.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=f"photo {broken / 'wall_01.jpg'} is not an image OpenCV can read"):
        list_negative_images(broken)


def test_crops_are_background_cut_by_the_recipe_and_take_their_share(joints, tiny_cfd):
    (folder,) = open_negatives([joints], seed=0, val_fraction=0.2)
    recipe = CropRecipe(64)
    source = NegativeSource([negative_photos(folder, folder.splits.train)], recipe)
    image, mask, valid = source.sample(3, np.random.default_rng(0), 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and not mask.any() and valid.all()
    assert image.std() > 5  # a real photo crop, not a blank
    samples = list_samples(tiny_cfd)
    cracks = load_images(samples, sorted(samples))
    crops = TrainCrops(cracks, recipe, seed=0, n_draws=200, extras=[(source, 0.25)])
    from_negatives = [d for d in range(len(crops)) if crops.source_of(d) == 1]
    assert 35 <= len(from_negatives) <= 65  # about a quarter of the epoch
    assert all(not crops.crop(d)[1].any() for d in from_negatives[:10])


def test_a_piece_counts_from_min_area_and_scoring_pools_the_folders(tmp_path):
    prob = np.zeros((64, 64), np.float32)
    prob[10, 5:24] = 0.9  # 19 px in a line
    assert not flags_a_piece(prob, 0.5, 20)
    prob[10, 24] = 0.9
    assert flags_a_piece(prob, 0.5, 20) and not flags_a_piece(prob, 0.95, 20)
    prob[40:44, 40:44] = 0.9  # a 16-px blob elsewhere adds no 20-px piece
    assert not flags_a_piece(prob, 0.5, 21)
    blank = np.zeros((64, 64, 3), np.uint8)
    marked = blank.copy()
    marked[10, 5:30] = 255
    for name, image in (("x", blank), ("y", marked), ("z", blank)):
        cv2.imwrite(str(tmp_path / f"{name}.png"), image)
    sets = {"a": NegativePhotos((tmp_path / "x.png", tmp_path / "y.png")), "b": NegativePhotos((tmp_path / "z.png",))}
    scored = score_negatives(lambda im: im[..., 0].astype(np.float32) / 255, sets, 0.5, 20)
    assert (scored["images"], scored["flagged"]) == (3, 1) and scored["rate"] == pytest.approx(1 / 3)
    assert scored["folders"] == {"a": {"images": 2, "flagged": 1}, "b": {"images": 1, "flagged": 0}}


def test_config_refuses_a_fraction_that_leaves_no_room(joints):
    with pytest.raises(ConfigError, match="--negatives-fraction"):
        TrainConfig(data=("x",), negatives=(str(joints),), negatives_fraction=0.0)
    with pytest.raises(ConfigError, match="--negatives-fraction"):
        TrainConfig(data=("x",), negatives=(str(joints),), negatives_fraction=0.5, synth_fraction=0.6)
    assert TrainConfig(data=("x",), negatives=f"{joints},{joints}").negatives == (str(joints),) * 2


def test_cli_trains_with_negatives_and_reports_the_held_out_photos(joints, tiny_cfd, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(["--data", str(tiny_cfd), "--negatives", str(joints), "--negatives-fraction", "0.3", *TINY,
                     "--epochs", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "negatives: site_joints 9 training / 1 held-out photos" in printed
    recorded = out / "splits" / "negatives" / "site_joints"
    assert len((recorded / "train.txt").read_text().split()) == 9 and len((recorded / "val.txt").read_text().split()) == 1
    config = json.loads((out / "config.json").read_text())
    assert config["negatives"] == [str(joints)] and config["negatives_fraction"] == 0.3
    val = torch.load(out / "best.pt", map_location="cpu", weights_only=False)["metrics"]
    neg = val["negatives"]
    assert neg["images"] == 1 and neg["flagged"] in (0, 1) and neg["min_area_px"] == 20
    assert neg["threshold"] == pytest.approx(val["ods_threshold"])  # scored at the epoch's own threshold
    with (out / "negatives.csv").open() as handle:  # every validated epoch, as history.csv
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(int(r["images"]) == 1 for r in rows)
    # resuming reads the recorded split, not a new one
    (recorded / "val.txt").write_text((recorded / "train.txt").read_text().split()[0] + "\n")
    kept = (recorded / "val.txt").read_text()
    assert run_main(["--resume", str(out / "last.pt"), "--epochs", "3", "--no-progress"]) == 0
    assert (recorded / "val.txt").read_text() == kept
    with (out / "negatives.csv").open() as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3]


def test_cli_names_a_bad_negatives_folder(tiny_cfd, tmp_path, capsys):
    assert run_main(["--data", str(tiny_cfd), "--negatives", str(tmp_path / "missing"), *TINY, "--epochs", "1",
                     "--out", str(tmp_path / "run")]) != 0
    assert f"--negatives folder {tmp_path / 'missing'} does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The daemon's real alerts (``edge.demo.run_demo``, the shipped model) on a survey folder of the sample photos."""
    from edge.demo import SAMPLES, run_demo

    root = tmp_path_factory.mktemp("survey")
    folder = root / "photos"
    shutil.copytree(SAMPLES, folder)
    run_demo(root / "out", source=folder, stream=io.StringIO())
    alerts = [json.loads(line) for line in (root / "out" / "alerts.jsonl").read_text().splitlines() if line.strip()]
    alerts = [a for a in alerts if a.get("type") in (None, "alert")]
    assert len({a["file"] for a in alerts}) >= 2, "the demo should alert on at least two sample photos"
    return root, alerts


def test_collect_copies_the_photos_of_the_alerts_named(survey, tmp_path, capsys):
    root, alerts = survey
    picked = [a for a in alerts if a["file"] == alerts[0]["file"]] + [next(a for a in alerts if a["file"] != alerts[0]["file"])]
    ids_file = tmp_path / "not_cracks.txt"
    ids_file.write_text(f"# joints, judged on the report\n{picked[-1]['alert_id']}  # formwork\n")
    out = tmp_path / "site_joints"
    argv = ["--alerts", str(root / "out" / "alerts.jsonl"), "--ids", ",".join(a["alert_id"] for a in picked[:-1]),
            "--ids-file", str(ids_file), "--out", str(out)]
    assert collect_main(argv) == 0
    names = sorted({a["file"] for a in picked})
    assert sorted(p.name for p in out.iterdir()) == names  # each photo once, however many alerts it raised
    assert all((out / n).read_bytes() == (root / "photos" / n).read_bytes() for n in names)
    assert f"2 photos: 2 copied into {out}" in capsys.readouterr().out
    assert collect_main(argv) == 0 and "0 copied" in capsys.readouterr().out  # again: nothing to do
    assert list_negative_images(out).keys() == {Path(n).stem for n in names}  # a folder train.run takes


def test_collect_refuses_unknown_ids_moved_photos_and_clashes(survey, tmp_path, capsys):
    root, alerts = survey
    jsonl = str(root / "out" / "alerts.jsonl")
    first = alerts[0]
    assert collect_main(["--alerts", jsonl, "--ids", "deadbeef", "--out", str(tmp_path / "a")]) == 2
    assert "alert deadbeef is not in the alerts given" in capsys.readouterr().err
    moved = tmp_path / "moved"
    moved.mkdir()
    assert collect_main(["--alerts", jsonl, "--ids", first["alert_id"], "--photos", str(moved),
                         "--out", str(tmp_path / "b")]) == 2
    assert f"photo of alert {first['alert_id']} not found: {moved / first['file']}" in capsys.readouterr().err
    (moved / first["file"]).write_bytes((root / "photos" / first["file"]).read_bytes())
    assert collect_main(["--alerts", jsonl, "--ids", first["alert_id"], "--photos", str(moved),
                         "--out", str(tmp_path / "b")]) == 0
    clash = tmp_path / "c"
    clash.mkdir()
    (clash / first["file"]).write_bytes(b"another photo of the same name")
    assert collect_main(["--alerts", jsonl, "--ids", first["alert_id"], "--out", str(clash)]) == 2
    assert "exists and differs" in capsys.readouterr().err
    assert (clash / first["file"]).read_bytes() == b"another photo of the same name"  # not overwritten
    assert collect_main(["--alerts", jsonl, "--out", str(tmp_path / "d")]) == 2
    assert "no alert id given" in capsys.readouterr().err


def test_a_photo_with_a_crack_not_marked_is_left_out(survey, tmp_path, capsys):
    root, alerts = survey
    jsonl = str(root / "out" / "alerts.jsonl")
    single = next(a for a in alerts if len(a["cracks"]) == 1)
    several = next(a for a in alerts if len(a["cracks"]) >= 2)
    n = len(several["cracks"])
    out = tmp_path / "site_joints"
    assert collect_main(["--alerts", jsonl, "--ids", f"{single['alert_id']}/1,{several['alert_id']}/1",
                         "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [single["file"]]
    assert f"{several['file']}: crack 2 of alert {several['alert_id']} is not marked" in printed
    # the mixed photo alone: nothing to collect, said with the reason, nothing created
    assert collect_main(["--alerts", jsonl, "--ids", f"{several['alert_id']}/1", "--out", str(tmp_path / "no")]) == 2
    assert "no photo to collect" in capsys.readouterr().err and not (tmp_path / "no").exists()
    # each of its cracks marked, one by one: collected
    each = ",".join(f"{several['alert_id']}/{k}" for k in range(1, n + 1))
    assert collect_main(["--alerts", jsonl, "--ids", each, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([single["file"], several["file"]])
    capsys.readouterr()
    assert collect_main(["--alerts", jsonl, "--ids", f"{several['alert_id']}/{n + 1}", "--out", str(out)]) == 2
    assert f"alert {several['alert_id']} has {n} crack(s), numbered 1 to {n}" in capsys.readouterr().err


def test_a_video_alert_is_left_out_and_said_so(survey, tmp_path, capsys):
    root, alerts = survey
    single = next(a for a in alerts if len(a["cracks"]) == 1)
    video = {**single, "alert_id": "f" * 32, "file": None, "source": "rtsp://cam/road"}
    jsonl = tmp_path / "alerts.jsonl"
    jsonl.write_text("".join(json.dumps(a) + "\n" for a in [*alerts, video]))
    out = tmp_path / "site_joints"
    assert collect_main(["--alerts", str(jsonl), "--ids", f"{video['alert_id']},{single['alert_id']}",
                         "--out", str(out)]) == 0
    assert "came from 'rtsp://cam/road', a video or camera: no photo to copy" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == [single["file"]]


def test_collect_from_the_fleet_database(survey, tmp_path, capsys):
    from datetime import datetime, timezone

    from edge.ingest.dburl import create_db_engine
    from edge.ingest.schema import migrate
    from edge.ingest.store import Message, Store
    from edge.topics import encode_alert

    root, alerts = survey
    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = create_db_engine(db)
    migrate(engine)
    store = Store(engine, "crack/+", tmp_path / "snapshots")
    sent = [{k: v for k, v in a.items() if k != "type"} for a in alerts]  # as the daemon publishes them
    stored = store.write([Message(f"crack/site/{a['device_id']}/alert", encode_alert(a), datetime.now(timezone.utc))
                          for a in sent])
    assert len(stored.new_alerts) == len(alerts)
    engine.dispose()
    single = next(a for a in alerts if len(a["cracks"]) == 1)
    photos = tmp_path / "copied_off_the_vehicle"  # the survey's photos, where the office keeps them
    shutil.copytree(root / "photos", photos)
    out = tmp_path / "site_joints"
    assert collect_main(["--db", db, "--ids", single["alert_id"], "--photos", str(photos), "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == [single["file"]]
    assert (out / single["file"]).read_bytes() == (photos / single["file"]).read_bytes()
    with pytest.raises(SystemExit) as stop:  # one source of alerts, not two
        collect_main(["--db", db, "--alerts", str(root / "out" / "alerts.jsonl"), "--ids", "x", "--out", str(out)])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@needs_chromium
def test_ticks_in_the_report_become_the_negatives_folder(survey, tmp_path, capsys):
    """The inspector's path, in a real Chromium: tick "Not a crack" on the report's rows, save the list, collect."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from edge.report.__main__ import main as report_main

    root, alerts = survey
    jsonl = root / "out" / "alerts.jsonl"
    report = tmp_path / "report"
    assert report_main([str(jsonl), "--out", str(report), "--title", "Wall W3"]) == 0
    single = next(a for a in alerts if len(a["cracks"]) == 1)
    several = next(a for a in alerts if len(a["cracks"]) >= 2)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = open_chromium(tmp_path, downloads)
    try:
        driver.get((report / "report.html").resolve().as_uri())
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_element(By.ID, "images").text != "")
        save = driver.find_element(By.ID, "save-nc")
        assert not save.is_enabled() and save.text == "Save not-a-crack list (0)"
        rows = driver.execute_script("return ROWS.map(r=>[r.n, r.file])")
        ticked = [n for n, f in rows if f == single["file"]] + [next(n for n, f in rows if f == several["file"])]
        for n in ticked:  # clicked as a user does; the wide table may put the box under the sticky header
            driver.execute_script("arguments[0].scrollIntoView({block:'center'});arguments[0].click()",
                                  driver.find_element(By.CSS_SELECTOR, f'.ncb[data-n="{n}"]'))
        assert save.text == f"Save not-a-crack list ({len(ticked)})"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#cracks tr.notcrack")) == len(ticked)
        driver.refresh()  # the ticks are kept in the browser
        wait.until(lambda d: d.find_element(By.ID, "images").text != "")
        assert sorted(int(e.get_attribute("data-n")) for e in driver.find_elements(By.CSS_SELECTOR, ".ncb:checked")) \
            == sorted(ticked)
        driver.find_element(By.ID, "save-nc").click()
        saved = downloads / "not-cracks.txt"
        wait.until(lambda d: saved.is_file() and saved.stat().st_size > 0)
    finally:
        driver.quit()
    text = saved.read_text()
    assert '# Not cracks, marked in "Wall W3"' in text
    listed = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert f"{single['alert_id']}/1" in listed and len(listed) == len(ticked)
    out = tmp_path / "site_joints"
    assert collect_main(["--alerts", str(jsonl), "--ids-file", str(saved), "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == [single["file"]]  # the mixed photo is left out, and said so
    assert f"{several['file']}: crack" in capsys.readouterr().out

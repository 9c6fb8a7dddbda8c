#!/usr/bin/env bash
# Make the multi-source model for edge/assets/demo_model.onnx (+ its INT8 sibling), in one command
# that may be run again and again until it is done (each call trains for at most BUDGET minutes):
#
#   bash benchmarks/make_multisource_model.sh     # run it again while it exits 75 ("budget used")
#
# train on the train splits of all six data sets with the robustness recipe, in four stages (each its own
# run folder): $RUN/stage1 constant lr, balanced by source, warm start from INIT; $RUN/stage2 cosine lr
# from stage 1's best.pt; $RUN/stage3 cosine lr from stage 2's best.pt with DeepCrack and AigleRN
# weighted 2 (the two sets whose validation scores fell in stage 2); $RUN/stage4 from stage 3's best.pt on
# joints: 160-px crops, 30 % generated crops (straight structures in 80 % of them, wide cracks in 25 % of
# their cracks), 10 % crops around stage 3's own straight false positives on the training images, validated
# through the daemon's 512-px tiler; $RUN/stage4b as stage 4 without the mined false positives; $RUN/stage4c as
# stage 4b with DeepCrack drawn twice as often (it keeps wide cracks)
#   -> the uniform weight-space soup of stages 3, 4, 4b and 4c, a quarter each ($RUN/average.pt: chained
#      train.weight_average, ALPHA x stage 4 + (1 - ALPHA) x stage 3, then 1/3 of stage 4b, then 1/4 of stage 4c)
#   -> export to ONNX (512 x 512 tiles, the edge daemon's tile; dynamic batch; sigmoid inside)
#   -> decision threshold on the pooled validation splits (every data set counting equally)
#   -> INT8 (QDQ) sibling calibrated on training images
#   -> test per data set, FP32 and INT8, through the daemon's tiler (2 px, alert rates, recall by
#      width: python -m benchmarks.bench_generalization --model edge/assets/demo_model.onnx)
#   -> provenance JSON; with INSTALL=1 copied into edge/assets/
#
# Environment overrides (defaults in brackets):
#   ROOT    folder holding the six data sets   [$CRACK_DATA_ROOT or ../shared/data]
#   RUN     run folder of every output         [runs/demo_model]
#   INIT    stage 1's starting weights: "" = from scratch; "git:<commit>" = edge/assets/demo_model.onnx of
#           that commit (the earlier DeepCrack-only model), or a .pt/.onnx path   [git:69bec3e]
#   EPOCHS1, EPOCHS2, EPOCHS3, EPOCHS4   epochs of EPOCH_SAMPLES crops in stages 1-3 and in each of 4, 4b, 4c   [10, 32, 16, 40]
#   ALPHA   share of stage 4 in the first average with stage 3 (train.weight_average)   [0.5]
#   EPOCH_SAMPLES                              [480]
#   BUDGET  minutes of training per call (0 = no limit)   [50]
#   RECIPE  robustness flags of train.run      [see below]
#   VAL_MAX  validation images per set for the threshold (0 = all)   [60]
#   TEST_MAX test images per set for the FP32 and INT8 test tables (0 = all)   [0]
#   INSTALL 1 = copy into edge/assets/ (only once the model meets docs/DEMO_MODEL.md's ship criteria)  [0]
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ROOT="${ROOT:-${CRACK_DATA_ROOT:-../shared/data}}"
RUN="${RUN:-runs/demo_model}"
INIT="${INIT-git:69bec3e}"
EPOCHS1="${EPOCHS1:-10}"
EPOCHS2="${EPOCHS2:-32}"
EPOCHS3="${EPOCHS3:-16}"
EPOCHS4="${EPOCHS4:-40}"
ALPHA="${ALPHA:-0.5}"
EPOCH_SAMPLES="${EPOCH_SAMPLES:-480}"
BUDGET="${BUDGET:-50}"
RECIPE="${RECIPE:---scale-aug-min 0.5 --scale-aug-max 1.5 --photometric all --synth-fraction 0.25}"
VAL_MAX="${VAL_MAX:-60}"
TEST_MAX="${TEST_MAX:-0}"
INSTALL="${INSTALL:-0}"
PY="${PYTHON:-python3}"
SETS=(deepcrack crackforest_cfd crack500 gaps384 aiglern_trimm shadowcrack)
DATA=()
for s in "${SETS[@]}"; do
    [[ -d "$ROOT/$s/images" ]] || { echo "make_multisource_model: $ROOT/$s/images not found; set ROOT" >&2; exit 2; }
    DATA+=("$ROOT/$s")
done
ALL="$(IFS=,; echo "${DATA[*]}")"
step() { echo; echo "== $(date +%H:%M:%S) $*"; }
FINAL="$RUN/stage4"  # its splits/ hold the validation and test images of the threshold and test steps
mkdir -p "$RUN/stage1" "$RUN/stage2" "$RUN/stage3" "$RUN/stage4" "$RUN/stage4b" "$RUN/stage4c"

# 128-px crops: the four crop sets are 120-240 px, so a 256 crop is mostly mirror fill, and 128 gives
# 4x the crops per CPU-second (w16: ~1 img/s at 256 vs ~4-5 at 128 on the 2-core VM)
COMMON=(--data "$ALL" --width 16 --head deep --size 128 --batch 8 --loss bce
        --epoch-samples "$EPOCH_SAMPLES" --val-max-images 60 --seed 0 --workers 1 --overlays 2 $RECIPE)

train_stage() {  # train_stage <run folder> <train.run args...>: start, or resume, or skip when finished
    local out="$1"; shift
    [[ -f "$out/metrics.json" ]] && return 0
    if [[ -f "$out/last.pt" ]]; then
        step "train: resume $out/last.pt (budget $BUDGET min)"
        "$PY" -m train.run --resume "$out/last.pt" --time-budget-min "$BUDGET" --no-progress
    else
        echo "python -m train.run $*" > "$out/train_command.txt"
        step "train: $(cat "$out/train_command.txt") --time-budget-min $BUDGET"
        "$PY" -m train.run "$@" --time-budget-min "$BUDGET" --no-progress
    fi
    local code=$?
    if [[ $code == 75 ]]; then echo "make_multisource_model: budget used; run the same command again to resume"; exit 75; fi
    [[ $code == 0 ]] || exit $code
}

# 1. train (resumable): stage 1 at a constant lr from INIT, stages 2 and 3 with a cosine decay
init_args=()
if [[ ! -f "$RUN/stage1/metrics.json" && ! -f "$RUN/stage1/last.pt" ]]; then
    if [[ "$INIT" == git:* ]]; then
        git show "${INIT#git:}:edge/assets/demo_model.onnx" > "$RUN/stage1/init.onnx" || exit 2
        init_args=(--init "$RUN/stage1/init.onnx")
    elif [[ -n "$INIT" ]]; then
        init_args=(--init "$INIT")
    fi
fi
step "1/6 train, stage 1 of 4"
train_stage "$RUN/stage1" "${COMMON[@]}" --lr 5e-4 --epochs "$EPOCHS1" "${init_args[@]}" --out "$RUN/stage1"
step "1/6 train, stage 2 of 4"
train_stage "$RUN/stage2" "${COMMON[@]}" --lr 5e-4 --lr-schedule cosine --lr-min 1e-5 --epochs "$EPOCHS2" \
    --eval-every 2 --init "$RUN/stage1/best.pt" --out "$RUN/stage2"
step "1/6 train, stage 3 of 4"
WEIGHTS=deepcrack=2,crackforest_cfd=1,crack500=1,gaps384=1,aiglern_trimm=2,shadowcrack=1
train_stage "$RUN/stage3" "${COMMON[@]}" --lr 2e-4 --lr-schedule cosine --lr-min 1e-5 --epochs "$EPOCHS3" \
    --eval-every 2 --source-weights "$WEIGHTS" --init "$RUN/stage2/best.pt" --out "$RUN/stage3"
step "1/6 train, stage 4 of 4: joints, wide cracks and its own straight false positives"
train_stage "$FINAL" --data "$ALL" --width 16 --head deep --size 160 --batch 8 --loss bce \
    --epoch-samples "$EPOCH_SAMPLES" --val-max-images 60 --test-max-images 10 --seed 0 --workers 1 --overlays 2 \
    --scale-aug-min 0.5 --scale-aug-max 1.5 --photometric all --synth-fraction 0.3 --synth-structures 0.8 \
    --synth-wide 0.25 --hard-negative-fraction 0.1 --init "$RUN/stage3/best.pt" --lr 2e-4 --lr-schedule cosine \
    --lr-min 1e-5 --epochs "$EPOCHS4" --eval-every 4 --eval-tile 512 --source-weights "$WEIGHTS" --out "$FINAL"
JOINTS=(--data "$ALL" --width 16 --head deep --size 160 --batch 8 --loss bce --epoch-samples "$EPOCH_SAMPLES"
        --val-max-images 60 --test-max-images 1 --seed 0 --workers 1 --overlays 0 --scale-aug-min 0.5
        --scale-aug-max 1.5 --photometric all --synth-fraction 0.3 --synth-structures 0.8 --synth-wide 0.25
        --init "$RUN/stage3/best.pt" --lr 2e-4 --lr-schedule cosine --lr-min 1e-5 --epochs "$EPOCHS4" --eval-every 4
        --eval-tile 512)
step "1/6 train, stage 4b: stage 4 without the mined false positives"
train_stage "$RUN/stage4b" "${JOINTS[@]}" --source-weights "$WEIGHTS" --out "$RUN/stage4b"
step "1/6 train, stage 4c: stage 4b with DeepCrack drawn twice as often"
train_stage "$RUN/stage4c" "${JOINTS[@]}" \
    --source-weights deepcrack=4,crackforest_cfd=1,crack500=1,gaps384=1,aiglern_trimm=2,shadowcrack=1 --out "$RUN/stage4c"

set -e
step "2/6 soup (stage 3 and 4: $ALPHA of stage 4; then 1/3 of stage 4b; then 1/4 of stage 4c) and export -> $RUN/demo_model.onnx"
{
    echo "python -m train.weight_average --base $RUN/stage3/best.pt --tuned $FINAL/best.pt --alpha $ALPHA --out $RUN/average34.pt"
    echo "python -m train.weight_average --base $RUN/average34.pt --tuned $RUN/stage4b/best.pt --alpha 0.3333 --out $RUN/average34b.pt"
    echo "python -m train.weight_average --base $RUN/average34b.pt --tuned $RUN/stage4c/best.pt --alpha 0.25 --out $RUN/average.pt"
} > "$RUN/average_command.txt"
"$PY" -m train.weight_average --base "$RUN/stage3/best.pt" --tuned "$FINAL/best.pt" --alpha "$ALPHA" --out "$RUN/average34.pt"
"$PY" -m train.weight_average --base "$RUN/average34.pt" --tuned "$RUN/stage4b/best.pt" --alpha 0.3333 --out "$RUN/average34b.pt"
"$PY" -m train.weight_average --base "$RUN/average34b.pt" --tuned "$RUN/stage4c/best.pt" --alpha 0.25 --out "$RUN/average.pt"
"$PY" -m export.onnx --checkpoint "$RUN/average.pt" --out "$RUN/demo_model.onnx" --size 512

step "3/6 threshold on the pooled validation splits (recorded in $FINAL/splits/)"
"$PY" -m calibration.threshold --model "$RUN/demo_model.onnx" $(printf -- '--data %s ' "${DATA[@]}") \
    --split val --run "$FINAL" --max-images "$VAL_MAX" --write | tee "$RUN/threshold.txt"
# the threshold for four mirrored passes averaged (model.flips = 4), recorded beside the single-pass one
"$PY" -m calibration.threshold --model "$RUN/demo_model.onnx" $(printf -- '--data %s ' "${DATA[@]}") \
    --split val --run "$FINAL" --max-images "$VAL_MAX" --flips 4 --write | tee -a "$RUN/threshold.txt"

step "4/6 INT8 sibling, calibrated on 16 training images per data set"
"$PY" - "$RUN" "$FINAL" "${DATA[@]}" <<'EOF'
"""A calibration folder of symlinks to a seeded sample of each data set's training images (never test)."""
import sys
from pathlib import Path

import numpy as np

run, final, roots = Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
folder = run / "int8_calibration" / "images"
folder.mkdir(parents=True, exist_ok=True)
for root in roots:
    recorded = final / "splits" / root.name / "train.txt"
    stems = recorded.read_text().split()
    rng = np.random.default_rng(0)
    for stem in rng.choice(stems, size=min(16, len(stems)), replace=False):
        image = next((root / "images").glob(stem + ".*"))
        link = folder / f"{root.name}_{image.name}"
        if not link.exists():
            link.symlink_to(image.resolve())
EOF
"$PY" -m calibration.int8 --model "$RUN/demo_model.onnx" --images "$RUN/int8_calibration" \
    --out "$RUN/demo_model.int8.onnx" --max-tiles 96 | tee "$RUN/int8.txt"
# the INT8 model's own threshold for four passes (it inherits the FP32 model's otherwise)
"$PY" -m calibration.threshold --model "$RUN/demo_model.int8.onnx" $(printf -- '--data %s ' "${DATA[@]}") \
    --split val --run "$FINAL" --max-images "$VAL_MAX" --flips 4 --write | tee -a "$RUN/int8.txt"

step "5/6 test per data set: FP32 and INT8 through the daemon's tiler"
for m in demo_model demo_model.int8; do
    "$PY" -m train.evaluate --model "$RUN/$m.onnx" --data "$ALL" --split test --splits "$FINAL" --no-progress \
        --max-images "$TEST_MAX" --overlays 3 --out "$RUN/eval-$m-test" | tee "$RUN/eval-$m-test.txt"
done
# 2-px tolerance, alert rates and recall by crack width: python -m benchmarks.bench_generalization --model

step "6/6 provenance: $RUN/demo_model.json"
"$PY" - "$RUN" <<'EOF'
"""The provenance record of the shipped model: how it was made and how it scores, per data set."""
import csv
import hashlib
import json
import sys
from pathlib import Path

from contract.onnx_file import read_metadata

run = Path(sys.argv[1])
model, int8 = run / "demo_model.onnx", run / "demo_model.int8.onnx"
meta = read_metadata(model)
stages = (run / "stage1", run / "stage2", run / "stage3", run / "stage4", run / "stage4b", run / "stage4c")
train = json.loads((stages[-1] / "metrics.json").read_text())
history = [row for stage in stages for row in csv.DictReader(open(stage / "history.csv"))]
keys = ("ods_f", "ois_f", "ap", "f_beta", "precision", "recall")


def per_source(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = {name: {k: m.get(k) for k in ("n_images", *keys)} | {"at_threshold": m["at_threshold"]}
            for name, m in metrics["sources"].items()}
    return {"pooled": {k: metrics.get(k) for k in ("ods_f", "ods_threshold", "mean_ods_f", "ois_f", "ap")},
            "sources": rows}


record = {
    "file": "edge/assets/demo_model.onnx",
    "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
    "size_bytes": model.stat().st_size,
    "int8_file": "edge/assets/demo_model.int8.onnx",
    "int8_sha256": hashlib.sha256(int8.read_bytes()).hexdigest(),
    "int8_size_bytes": int8.stat().st_size,
    "recipe": "bash benchmarks/make_multisource_model.sh",
    "train_commands": [(stage / "train_command.txt").read_text().strip() for stage in stages],
    "average_commands": (run / "average_command.txt").read_text().strip().splitlines(),
    "train_epochs_s": round(sum(float(r["seconds"]) for r in history)),
    "train_device": train.get("device"),
    "best_epoch": train.get("best_epoch"),
    "train_commit": meta.train_commit,
    "data": {"sources": train["data"], "train": "each data set's train split (DeepCrack, CrackForest: minus the "
             "validation images recorded in the run's splits/)", "test": "each data set's test split"},
    "model": {"arch": meta.arch, "width": meta.width, "head": meta.head, "input_size": meta.input_size,
              "precision": meta.precision, "threshold": meta.threshold},
    "threshold_choice": (run / "threshold.txt").read_text().strip().splitlines(),
    "test_fp32": per_source(run / "eval-demo_model-test"),
    "test_int8": per_source(run / "eval-demo_model.int8-test"),
}
(run / "demo_model.json").write_text(json.dumps(record, indent=2) + "\n")
print(json.dumps(record["test_fp32"], indent=2))
EOF

if [[ "$INSTALL" == "1" ]]; then
    cp "$RUN/demo_model.onnx" "$RUN/demo_model.int8.onnx" "$RUN/demo_model.json" edge/assets/
    step "installed edge/assets/demo_model.onnx ($(du -h edge/assets/demo_model.onnx | cut -f1)) and the INT8 sibling; try: $PY -m edge demo"
fi
echo "make_multisource_model: done; outputs in $RUN"

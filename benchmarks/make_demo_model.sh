#!/usr/bin/env bash
# Retrain the demo model shipped as edge/assets/demo_model.onnx, from scratch, in one command:
#
#   bash benchmarks/make_demo_model.sh            # ~35 min on 2 busy CPU cores
#
# train (DeepCrack official train split, 10 % of it held out for validation)
#   -> export to ONNX (static 512 x 512 tiles, dynamic batch, sigmoid inside)
#   -> decision threshold = F-beta-optimal (ODS) threshold on the held-out validation images
#   -> score on the DeepCrack official test split (237 images)
#   -> copy into edge/assets/demo_model.onnx + edge/assets/demo_model.json (provenance)
#
# Environment overrides (defaults in brackets):
#   DATA    DeepCrack folder with images/ masks/ splits/         [../shared/data/deepcrack]
#   RUN     run folder for every intermediate output             [runs/demo_model-<date>]
#   EPOCHS  training epochs of 270 random 256-px crops each      [16]
#   DEVICE  auto | cpu | cuda                                    [auto]
#   THREADS CPU threads of torch (OMP_NUM_THREADS) and of the threshold search   [1]
#           1 is faster on a CPU shared with other jobs (measured: 0.9 vs 2.4 s per step of 4 crops
#           with 2 threads on 2 busy cores, where OpenMP threads wait on each other); on a machine
#           of your own set THREADS=$(nproc).
#   INSTALL 1 = copy the result into edge/assets/, 0 = leave it in RUN   [1]
# See docs/DEMO_MODEL.md for the choices (width 16, tile 256, lr 1e-3, AELF) and measured results.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DATA="${DATA:-../shared/data/deepcrack}"
RUN="${RUN:-runs/demo_model-$(date +%Y%m%d-%H%M%S)}"
EPOCHS="${EPOCHS:-16}"
DEVICE="${DEVICE:-auto}"
INSTALL="${INSTALL:-1}"
THREADS="${THREADS:-1}"
export OMP_NUM_THREADS="$THREADS"
PY="${PYTHON:-python3}"

if [[ ! -f "$DATA/splits/train.txt" || ! -f "$DATA/splits/test.txt" ]]; then
    echo "make_demo_model: $DATA/splits/{train,test}.txt not found; set DATA to the DeepCrack folder" \
         "(images/, masks/, splits/train.txt, splits/test.txt)" >&2
    exit 2
fi
if [[ -e "$RUN" ]]; then
    echo "make_demo_model: run folder $RUN exists; set RUN to a new folder" >&2
    exit 2
fi

TRAIN_ARGS=(--data "$DATA" --width 16 --head deep --size 256 --batch 4 --lr 1e-3 --loss aelf
            --epochs "$EPOCHS" --eval-every 2 --seed 0 --device "$DEVICE" --workers 1
            --overlays 4 --no-progress --out "$RUN")

step() { echo; echo "== $(date +%H:%M:%S) $*"; }
t0=$SECONDS

step "1/5 train: $PY -m train.run ${TRAIN_ARGS[*]}"
"$PY" -m train.run "${TRAIN_ARGS[@]}"
train_s=$((SECONDS - t0))

step "2/5 export: $RUN/best.pt -> $RUN/demo_model.onnx (512 x 512 tiles)"
"$PY" -m export.onnx --checkpoint "$RUN/best.pt" --out "$RUN/demo_model.onnx" --size 512

step "3/5 threshold on the held-out validation images ($RUN/splits/val.txt)"
"$PY" -m calibration.threshold --model "$RUN/demo_model.onnx" --data "$DATA" --split "$RUN/splits/val.txt" \
    --threads "$THREADS" --write | tee "$RUN/threshold.txt"

step "4/5 test: DeepCrack official test split"
"$PY" -m train.evaluate --model "$RUN/demo_model.onnx" --data "$DATA" --split test --no-progress \
    --out "$RUN/eval-onnx-test"

step "5/5 provenance: $RUN/demo_model.json"
"$PY" - "$RUN" "$DATA" "$train_s" "${TRAIN_ARGS[*]}" <<'EOF'
"""Write the provenance record of the demo model: how it was made and how it scores."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

run, data, train_s, train_args = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
model = run / "demo_model.onnx"
sys.path.insert(0, ".")
from export.metadata_io import read_metadata  # noqa: E402

meta = read_metadata(model)
test = json.loads((run / "eval-onnx-test" / "metrics.json").read_text())
train_metrics = json.loads((run / "metrics.json").read_text())
keys = ("precision", "recall", "f_beta", "f1", "iou", "ods_f", "ods_threshold", "ois_f", "ap")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()


record = {
    "file": "edge/assets/demo_model.onnx",
    "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
    "size_bytes": model.stat().st_size,
    "recipe": "bash benchmarks/make_demo_model.sh",
    "train_command": f"python -m train.run {train_args}",
    "train_wall_s": train_s,
    "train_device": train_metrics.get("device"),
    "best_epoch": train_metrics.get("best_epoch"),
    "commit": git("rev-parse", "HEAD"),
    "tree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    "data": {"name": "DeepCrack", "path": data, "train": "splits/train.txt minus 10 % validation",
             "validation": str(run / "splits" / "val.txt"), "test": "splits/test.txt (237 images)"},
    "model": {"arch": meta.arch, "width": meta.width, "head": meta.head, "input_size": meta.input_size,
              "precision": meta.precision, "threshold": meta.threshold},
    "validation_threshold": meta.threshold,
    "test_onnx": {"split": "test", "n_images": test.get("n_images"),
                  **{f"{k}_at_0.5" if k in keys[:5] else k: test.get(k) for k in keys},
                  "at_threshold": test.get("at_threshold")},
    "test_checkpoint_whole_image": {k: train_metrics.get(k) for k in keys},
}
(run / "demo_model.json").write_text(json.dumps(record, indent=2) + "\n")
print(json.dumps(record, indent=2))
EOF

if [[ "$INSTALL" == "1" ]]; then
    cp "$RUN/demo_model.onnx" edge/assets/demo_model.onnx
    cp "$RUN/demo_model.json" edge/assets/demo_model.json
    step "installed edge/assets/demo_model.onnx ($(du -h edge/assets/demo_model.onnx | cut -f1)); try: $PY -m edge demo"
fi
echo "make_demo_model: done in $((SECONDS - t0)) s (training $train_s s); outputs in $RUN"

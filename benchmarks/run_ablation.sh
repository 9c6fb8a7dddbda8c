#!/usr/bin/env bash
# The paper's Table 6 ablation (Liu et al. 2022) on public crack data, REDUCED SIZE FOR A 2-CORE CPU.
#
# What is reduced against the paper (width 64, 512 crops, 30 epochs, 5 seeds, per-data-set 5x5 grid):
#   width 8, 128-px crops, 30 epochs on CrackForest (12 on DeepCrack, 270 steps each), 2 seeds for the
#   Table 6 rows on CrackForest (3 on DeepCrack) and 1 for the L1/L2/Dice/Focal baselines, a 3x3 gamma grid
#   {-0.07, 0, 0.07}^2 trained for 12 epochs per trial on CrackForest only, DeepCrack at half
#   resolution (--scale 0.5, which thins cracks in pixels). The learning rate is the paper's 1e-4 for
#   every row (1e-3 drove AELF into a saturated all-background sigmoid here; see docs/RESULTS_ABLATION.md).
#
# Two lanes of independent jobs run side by side (2 cores, one torch thread each). Outputs go to
# $OUT (git-ignored runs/ by default); `python -m benchmarks.summarize_ablation` merges them into tables/figures.
#
# Usage: bash benchmarks/run_ablation.sh            (37 min on the shared, loaded 2-core CPU, with 1 DeepCrack
#                                                    seed and no DeepCrack baselines; the 2 more seeds and the 4
#                                                    baselines took another 9.6 min, ~95 s a row, on the quiet
#                                                    machine)
#        OUT=runs/x EPOCHS=2 DC_EPOCHS=1 GRID_EPOCHS=1 bash benchmarks/run_ablation.sh   (smoke)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/ablation-cpu}
CFD=${CFD:-${CRACK_DATA_ROOT:-../shared/data}/crackforest_cfd}
DC=${DC:-${CRACK_DATA_ROOT:-../shared/data}/deepcrack}
EPOCHS=${EPOCHS:-30}            # CrackForest rows
GRID_EPOCHS=${GRID_EPOCHS:-12}  # each gamma-grid trial
DC_EPOCHS=${DC_EPOCHS:-12}      # DeepCrack rows
SEEDS=${SEEDS:-2}               # Table 6 rows on CrackForest
BASE_SEEDS=${BASE_SEEDS:-1}     # L1/L2/Dice/Focal rows on CrackForest
DC_SEEDS=${DC_SEEDS:-3}         # Table 6 rows on DeepCrack (seeds 0..DC_SEEDS-1, one train.run each)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

COMMON=(--width 8 --size 128 --batch 1 --lr 1e-4 --device cpu --workers 0 --overlays 0 --no-progress)
CFD_ARGS=(--data "$CFD" "${COMMON[@]}" --epochs "$EPOCHS" --repeats "$SEEDS")
BASE_ARGS=(--data "$CFD" "${COMMON[@]}" --epochs "$EPOCHS" --repeats "$BASE_SEEDS")
DC_ARGS=(--data "$DC" "${COMMON[@]}" --epochs "$DC_EPOCHS" --scale 0.5)

mkdir -p "$OUT"
row() {  # row <out-subfolder> <train.run flags...>: one Table-6 row, logged next to its outputs
  local dest=$1; shift
  mkdir -p "$OUT/$dest"
  echo "[$(date +%T)] start $dest: python -m train.run $*" | tee -a "$OUT/commands.log"
  /usr/bin/time -f "%e s wall" -o "$OUT/$dest.time" python3 -m train.run "$@" --out "$OUT/$dest" \
    > "$OUT/$dest.log" 2>&1
  echo "[$(date +%T)] done  $dest ($(cat "$OUT/$dest.time"))" | tee -a "$OUT/commands.log"
}

lane_a() {
  # gamma grid on CrackForest's validation split (seed 0), 3x3 of the paper's 5x5 grid
  row cfd/grid --data "$CFD" "${COMMON[@]}" --epochs "$GRID_EPOCHS" --grid-search --grid=-0.07,0,0.07
  read -r G1 G2 < <(python3 -c "import json,sys; g=json.load(open(sys.argv[1])); print(g['gamma1'], g['gamma2'])" \
    "$OUT/cfd/grid/grid.json")
  echo "$G1 $G2" > "$OUT/gamma.txt"
  row cfd/deep-aelf "${CFD_ARGS[@]}" --head deep --loss aelf --gamma1="$G1" --gamma2="$G2"
  row cfd/deep-l1 "${BASE_ARGS[@]}" --head deep --loss l1
  row cfd/deep-l2 "${BASE_ARGS[@]}" --head deep --loss l2
  # DeepCrack: gamma transferred from the CrackForest grid (no DeepCrack grid in this budget); one
  # train.run per seed into <row>/seed-<s>/ (summarize_ablation.py merges them), so seeds interleave
  for seed in $(seq 0 $((DC_SEEDS - 1))); do
    row "dc/deep-aelf/seed-$seed" "${DC_ARGS[@]}" --seed "$seed" --head deep --loss aelf --gamma1="$G1" --gamma2="$G2"
    row "dc/deep-exp/seed-$seed" "${DC_ARGS[@]}" --seed "$seed" --head deep --loss exp
  done
  row dc/deep-l1 "${DC_ARGS[@]}" --head deep --loss l1
  row dc/deep-l2 "${DC_ARGS[@]}" --head deep --loss l2
}

lane_b() {
  row cfd/shallow-bce "${CFD_ARGS[@]}" --head shallow --loss bce
  row cfd/deep-bce "${CFD_ARGS[@]}" --head deep --loss bce
  row cfd/deep-exp "${CFD_ARGS[@]}" --head deep --loss exp
  row cfd/deep-dice "${BASE_ARGS[@]}" --head deep --loss dice
  row cfd/deep-focal "${BASE_ARGS[@]}" --head deep --loss focal
  for seed in $(seq 0 $((DC_SEEDS - 1))); do
    row "dc/shallow-bce/seed-$seed" "${DC_ARGS[@]}" --seed "$seed" --head shallow --loss bce
    row "dc/deep-bce/seed-$seed" "${DC_ARGS[@]}" --seed "$seed" --head deep --loss bce
  done
  row dc/deep-dice "${DC_ARGS[@]}" --head deep --loss dice
  row dc/deep-focal "${DC_ARGS[@]}" --head deep --loss focal
}

lane_a & pid_a=$!
lane_b & pid_b=$!
wait "$pid_a"; wait "$pid_b"

# tables (ablation.md/.json next to the runs) and figures (benchmarks/figures/ablation_{cfd,dc}_*.png)
python3 -m benchmarks.summarize_ablation --runs "$OUT/cfd" --name ablation_cfd --title "CFD, CPU width 8" \
  --gamma-source "3x3 grid on CFD validation (seed-0 split, $GRID_EPOCHS epochs per trial): $(cat "$OUT/gamma.txt")"
python3 -m benchmarks.summarize_ablation --runs "$OUT/dc" --name ablation_dc --title "DeepCrack x0.5, CPU width 8" \
  --gamma-source "transferred from the CFD grid (not searched on DeepCrack): $(cat "$OUT/gamma.txt")"

# CFD with a 2-px distance tolerance (closer to CrackForest-style scoring), Table 6 extremes only
for dest in shallow-bce deep-aelf; do
  for seed in $(seq 0 $((SEEDS - 1))); do
    python3 -m train.evaluate --model "$OUT/cfd/$dest/seed-$seed/best.pt" --data "$CFD" --tolerance-px 2 \
      --overlays 0 --no-progress --out "$OUT/cfd-tol2/$dest-seed-$seed"
  done
done

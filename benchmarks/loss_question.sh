#!/usr/bin/env bash
# The paper's loss question (AELF > BCE?) on the multi-source recipe, at a reduced size that fits a CPU:
#
#   bash benchmarks/loss_question.sh          # run it again after an interruption: finished runs are skipped
#
# 1. gamma grid: python -m train.run --grid-search over GRID x GRID (AELF, seed 0), every pair scored on the
#    pooled validation splits of all six sets (each set counting equally); the best pair is used below
# 2. in-source: BCE, Exp (gamma 0) and AELF (the grid's pair), seeds 0..SEEDS-1, trained on all six sets,
#    scored on TEST_MAX seeded test images per set
# 3. held out: the same three losses and seeds trained on DeepCrack, Crack500, AigleRN and ShadowCrack only,
#    scored on the full test splits of GAPs384 and CrackForest (never seen in training)
# 4. the tables (benchmarks.compare_runs, mean +- std over the seeds) appended to benchmarks/RESULTS.md
#
# Environment overrides: ROOT (data sets) [$CRACK_DATA_ROOT or ../shared/data], WORK [runs/loss_question],
# SEEDS [3], GRID [-0.07,0,0.07], TEST_MAX [60], SIZE_ARGS (the reduced training size, below).
# Time on the 2-vCPU VM: about 2.5 min per training run (benchmarks/RESULTS.md has the measured total).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ROOT="${ROOT:-${CRACK_DATA_ROOT:-../shared/data}}"
WORK="${WORK:-runs/loss_question}"
SEEDS="${SEEDS:-3}"
GRID="${GRID:--0.07,0,0.07}"
TEST_MAX="${TEST_MAX:-60}"
SIZE_ARGS="${SIZE_ARGS:---width 8 --size 128 --batch 8 --lr 1e-3 --epochs 5 --epoch-samples 240 --val-max-images 30 --workers 1 --overlays 0}"
RECIPE="--scale-aug-min 0.5 --scale-aug-max 1.5 --photometric all --synth-fraction 0.25"
PY="${PYTHON:-python3}"
ALL="$ROOT/deepcrack,$ROOT/crackforest_cfd,$ROOT/crack500,$ROOT/gaps384,$ROOT/aiglern_trimm,$ROOT/shadowcrack"
FOUR="$ROOT/deepcrack,$ROOT/crack500,$ROOT/aiglern_trimm,$ROOT/shadowcrack"
HELD="$ROOT/gaps384,$ROOT/crackforest_cfd"
for s in deepcrack crackforest_cfd crack500 gaps384 aiglern_trimm shadowcrack; do
    [[ -d "$ROOT/$s/images" ]] || { echo "loss_question: $ROOT/$s/images not found; set ROOT" >&2; exit 2; }
done
mkdir -p "$WORK"
step() { echo "== $(date +%H:%M:%S) $*"; }
# shellcheck disable=SC2086
train() {  # train <out> <data> <args...>: one run, skipped when its metrics.json exists
    local out="$1" data="$2"; shift 2
    [[ -f "$out/metrics.json" ]] && return 0
    rm -rf "$out"
    step "train $out"
    "$PY" -m train.run --data "$data" $SIZE_ARGS $RECIPE --no-progress --out "$out" "$@" > "$out.log" 2>&1 \
        || { echo "loss_question: training failed, see $out.log" >&2; exit 1; }
}

# 1. the gamma grid on the pooled validation splits
if [[ ! -f "$WORK/grid/grid.json" ]]; then
    step "gamma grid $GRID x $GRID (pooled validation)"
    rm -rf "$WORK/grid"
    # shellcheck disable=SC2086
    "$PY" -m train.run --data "$ALL" $SIZE_ARGS $RECIPE --no-progress --test-max-images "$TEST_MAX" --seed 0 \
        --grid-search --grid="$GRID" --out "$WORK/grid" > "$WORK/grid.log" 2>&1 \
        || { echo "loss_question: grid search failed, see $WORK/grid.log" >&2; exit 1; }
fi
read -r G1 G2 < <("$PY" -c "import json,sys; g=json.load(open(sys.argv[1])); print(g['gamma1'], g['gamma2'])" "$WORK/grid/grid.json")
step "grid: gamma1=$G1 gamma2=$G2"

# 2 + 3. three losses x seeds, in-source and held out
for seed in $(seq 0 $((SEEDS - 1))); do
    for loss in bce exp aelf; do
        args=(--loss "$loss" --seed "$seed")
        [[ $loss == aelf ]] && args+=(--gamma1 "$G1" --gamma2 "$G2")
        train "$WORK/in-$loss-s$seed" "$ALL" "${args[@]}" --test-max-images "$TEST_MAX"
        out="$WORK/out-$loss-s$seed"
        train "$out" "$FOUR" "${args[@]}" --test-max-images "$TEST_MAX"
        if [[ ! -f "$out/eval-heldout/metrics.json" ]]; then
            step "held-out test $out"
            "$PY" -m train.evaluate --model "$out/best.pt" --data "$HELD" --split test --no-progress --overlays 0 \
                --out "$out/eval-heldout" >> "$out.log" 2>&1
        fi
    done
done

# 4. tables
AELF="AELF (γ1=$G1, γ2=$G2)"
step "tables -> benchmarks/RESULTS.md"
"$PY" -m benchmarks.compare_runs --title "The loss question, in-source ($SEEDS seeds, reduced CPU size)" \
    --note "python -m train.run --data <all six> $SIZE_ARGS $RECIPE --test-max-images $TEST_MAX --seed 0..$((SEEDS - 1)) --loss bce | exp | aelf --gamma1 $G1 --gamma2 $G2 (γ: grid $GRID on the pooled validation, seed 0: $WORK/grid/grid.csv)" \
    --note "bash benchmarks/loss_question.sh; test scores on $TEST_MAX seeded test images per set" \
    --run "BCE=$WORK/in-bce-s*" --run "Exp (γ=0)=$WORK/in-exp-s*" --run "$AELF=$WORK/in-aelf-s*"
"$PY" -m benchmarks.compare_runs --title "The loss question, held out ($SEEDS seeds, reduced CPU size): trained on DeepCrack, Crack500, AigleRN, ShadowCrack; tested on GAPs384 and CrackForest" \
    --note "python -m train.run --data deepcrack,crack500,aiglern_trimm,shadowcrack (same size and recipe as in-source) then python -m train.evaluate --model <run>/best.pt --data gaps384,crackforest_cfd --split test (full test splits)" \
    --run "BCE=$WORK/out-bce-s*/eval-heldout" --run "Exp (γ=0)=$WORK/out-exp-s*/eval-heldout" \
    --run "$AELF=$WORK/out-aelf-s*/eval-heldout"
step "done"

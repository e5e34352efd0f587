#!/usr/bin/env bash
# The CPU ladder: model=scaled depths 1-4 (32 wide per layer, head size 32) at budgets
# 1e11, 3e11, 1e12 FLOPs, fitted, and 3e12 held out (run, not fitted: the check of the
# prediction); 3 seeds; Tiny Shakespeare characters; fitted on val/bpb, so the miss is in
# bits per byte. Two single-thread workers (two cores): depth 1 alone (its runs are the
# slowest per FLOP) beside depths 2-4, then one fit over both halves.
#
#   bash experiments/ladder/run.sh                 # from the repository root
#   SEEDS=[0] bash experiments/ladder/run.sh       # one seed: about a third of the time
#   WSD=true bash experiments/ladder/run.sh        # smaller budgets as decays off one stable run
#
# Estimated from 30-step timings on a loaded machine (~200k tokens/s at depth 1, ~20k at
# depth 4, one thread): ~15 min for depth 1's 12 runs, ~10 min for the other 36 side by
# side, plus start-up and validation. The reference (ref_depth=4, 2048-token batch) is
# nano's 4 x 128 shape, whose AdamW lr 3e-3 is gptlab's nano_adamw recipe.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python}
RUNS=${RUNS:-$ROOT/outputs/ladder/cpu}  # outputs/ is git-ignored
SEEDS=${SEEDS:-[0,1,2]}
WSD=${WSD:-false}
BUDGETS=${BUDGETS:-[1e11,3e11,1e12,3e12]}  # the last one is held out
HOLDOUT=${HOLDOUT:-3e12}
DATA=${DATA:-$ROOT/../shared/data/tinyshakespeare.txt}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

COMMON=(
  "budgets=$BUDGETS" "holdout=$HOLDOUT" "seeds=$SEEDS" metric=val/bpb "wsd=$WSD"
  data=shakespeare "data.path=$DATA" data.val_tokens=65536
  model.aspect_ratio=32 model.head_dim=32 model.block_size=128
  model.ref_depth=4 model.ref_batch_tokens=2048 optimizer.lr=3e-3
  trainer.accelerator=cpu callbacks.progress_bar.refresh_rate=0
)
cd "$ROOT" && mkdir -p "$RUNS"
"$PY" -m gptlab.ladder "${COMMON[@]}" "depths=[1]" "sweep_dir=$RUNS/depth1" > "$RUNS/depth1.log" 2>&1 &
first=$!
"$PY" -m gptlab.ladder "${COMMON[@]}" "depths=[2,3,4]" "sweep_dir=$RUNS/depth2-4" > "$RUNS/depth2-4.log" 2>&1 || true
wait "$first" || true  # each half's own fit has one half of the sizes and may refuse; the fit below has all
"$PY" -m gptlab.ladder "fit=$RUNS" "holdout=$HOLDOUT" metric=val/bpb | tee "$ROOT/experiments/ladder/fit.txt"
cp "$RUNS/fit.json" "$RUNS/ladder.png" "$ROOT/experiments/ladder/"

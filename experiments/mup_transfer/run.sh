#!/usr/bin/env bash
# The µP transfer study as a resumable queue: AdamW lr sweeps (x2 grid) at widths 1024, 512,
# 256 and 128, under sp and under µP (base width 128), 3 seeds a point. One queue entry is one
# (parametrization, width, lr): a `python -m gptlab.train --multirun seed=...` over the seeds it
# still lacks, in $RUNS/<parametrization>/w<width>/log2lr<k>/<seed>/. Two single-thread workers
# (two cores) take the entries widest first, so the short ones fill the end. A seed counts as
# done when it finished or diverged (error.txt from gptlab's guard); an entry whose seeds are all
# done is skipped, so the script can be stopped and rerun. Finally table.py writes
# results.md and transfer.png into $OUT (default: this folder).
#
#   bash experiments/mup_transfer/run.sh                      # from anywhere; ~100 min on 2 cores
#   SEEDS="1 2 3 4 5" bash experiments/mup_transfer/run.sh    # more seeds: only the new ones run
#   SP_LRS="-15 -14" bash experiments/mup_transfer/run.sh     # extend a grid edge
#   SP_LRS_1024="-14 -13 -12 -11" bash experiments/mup_transfer/run.sh  # one width's own grid
#   DRY_RUN=1 bash experiments/mup_transfer/run.sh            # the queue and its estimate only
#   STEPS=10 WIDTHS="256 128" SP_LRS="-9 -8" MUP_LRS="-9 -8" SEEDS="1 2" WORKERS=1 \
#     RUNS=/tmp/mup_smoke bash experiments/mup_transfer/run.sh        # a one-minute smoke run
#   HEAD_SIZE=32 RUNS=outputs/mup_transfer_heads OUT=outputs/mup_transfer_heads \
#     bash experiments/mup_transfer/run.sh      # widen by adding heads of 32 instead (README)
#
# Grids: sp 2^-14..2^-7, µP 2^-12..2^-6, chosen from probes (README, "Set-up"): sp's optimum
# is ~2^-8.5 at width 128 and ~2^-12.5 at 1024, µP's stays near 2^-9.5 at 1024.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python}
RUNS=${RUNS:-$ROOT/outputs/mup_transfer}  # outputs/ is git-ignored
WIDTHS=${WIDTHS:-"1024 512 256 128"}
SP_LRS=${SP_LRS:-"-14 -13 -12 -11 -10 -9 -8 -7"}
MUP_LRS=${MUP_LRS:-"-12 -11 -10 -9 -8 -7 -6"}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-150}
WARMUP=${WARMUP:-$((STEPS / 10))}
WORKERS=${WORKERS:-2}
DATA=${DATA:-$ROOT/../shared/data/tinyshakespeare.txt}  # else data=shakespeare downloads it once
EXTRA=${EXTRA:-}  # more overrides for every job, e.g. EXTRA="model.mup.zero_readout=true"
# Empty: 4 heads at every width (the head size grows, 32 ... 256). A number: n_head = width /
# HEAD_SIZE, and µP's proxy has 128 / HEAD_SIZE heads (128: the yaml's model.mup.base_width).
HEAD_SIZE=${HEAD_SIZE:-}
for w in $WIDTHS 128; do
  if [[ -n $HEAD_SIZE ]] && ((w % HEAD_SIZE)); then
    echo "width $w is not a multiple of HEAD_SIZE=$HEAD_SIZE; choose a divisor of 128" >&2
    exit 2
  fi
done
export HERE PY STEPS WARMUP EXTRA RUNS HEAD_SIZE
export DATA_OVERRIDE=""
[[ -f "$DATA" ]] && DATA_OVERRIDE="data.path=$DATA"

seed_done() {  # $1: one seed's run folder
  grep -qs '"status": "finished"' "$1/summary.json" ||
    grep -qs -e 'non-finite' -e 'Lower optimizer.lr' "$1/error.txt"
}

run_entry() {  # parametrization width log2-lr seeds (comma-separated)
  local p=$1 w=$2 k=$3 seeds=$4 lr
  local dir="$RUNS/$p/w$w/log2lr$k" heads=""
  lr=$(awk -v k="$k" 'BEGIN { printf "%.12g", 2 ^ k }')
  [[ -n $HEAD_SIZE ]] && heads="model.n_head=$((w / HEAD_SIZE)) model.mup.base_n_head=$((128 / HEAD_SIZE))"
  mkdir -p "$dir"
  # shellcheck disable=SC2086  # DATA_OVERRIDE, heads and EXTRA are lists of overrides
  if OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" -m gptlab.train --multirun --config-dir "$HERE" \
    experiment=mup_transfer "model.parametrization=$p" "model.n_embd=$w" "optimizer.lr=$lr" \
    "seed=$seeds" "trainer.max_steps=$STEPS" "scheduler.warmup_steps=$WARMUP" $DATA_OVERRIDE $heads $EXTRA \
    "hydra.sweep.dir=$dir" 'hydra.sweep.subdir=${seed}' >"$dir/sweep.log" 2>&1; then
    echo "$(date +%H:%M:%S) done   $p width $w lr 2^$k seeds $seeds"
  else
    echo "$(date +%H:%M:%S) failed $p width $w lr 2^$k seeds $seeds: see $dir/sweep.log" >&2
  fi
}
export -f run_entry

queue=()
runs=0
for w in $WIDTHS; do
  for p in sp mup; do
    grid="${p^^}_LRS_$w"  # a width's own grid (SP_LRS_1024=...) or the shared one
    lrs=$SP_LRS
    [[ $p == mup ]] && lrs=$MUP_LRS
    lrs=${!grid:-$lrs}
    for k in $lrs; do
      todo=()
      for s in $SEEDS; do
        folder="$RUNS/$p/w$w/log2lr$k/$s"
        seed_done "$folder" && continue
        rm -rf "$folder"  # an interrupted or crashed attempt: start that seed afresh
        todo+=("$s")
      done
      [[ ${#todo[@]} -eq 0 ]] && continue
      queue+=("$p $w $k $(IFS=,; echo "${todo[*]}")")
      runs=$((runs + ${#todo[@]}))
    done
  done
done

# Expected duration from one-thread step times (ms a step at widths 128/256/512/1024, measured
# 2026-12-02 with both workers busy), the final validation (~5 steps' worth),
# ~1 s a run and ~6 s a sweep of start-up.
estimate=$(printf '%s\n' "${queue[@]}" | awk -v steps="$STEPS" -v workers="$WORKERS" '
  BEGIN { ms[128] = 35; ms[256] = 100; ms[512] = 330; ms[1024] = 1130 }
  NF { n = split($4, s, ","); t = (w = $2) in ms ? ms[w] : 1130 * (w / 1024) ^ 2
       total += 6 + n * (1 + (steps + 5) * t / 1000) }
  END { printf "%.0f", total / workers / 60 }')
echo "${#queue[@]} sweeps, $runs runs to go, about $estimate min with $WORKERS workers; runs in $RUNS"
[[ -n "${DRY_RUN:-}" ]] && { printf '%s\n' "${queue[@]}"; exit 0; }
if [[ ${#queue[@]} -gt 0 ]]; then
  printf '%s\n' "${queue[@]}" | xargs -P "$WORKERS" -L 1 bash -c 'run_entry "$@"' _
fi
"$PY" "$HERE/table.py" "$RUNS" --out "${OUT:-$HERE}"

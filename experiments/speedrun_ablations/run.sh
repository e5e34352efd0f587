#!/usr/bin/env bash
# The ablation study as a queue: every configuration of configs.txt at every size, each a
# `python -m gptlab.train --multirun seed=...` (start-up paid once per configuration),
# two single-thread workers at a time (two cores). A configuration whose seeds have all
# finished is skipped, so the script can be stopped and rerun.
#
#   GPTLAB_DATA_DIR=<folder with corpora/tinyshakespeare.txt> bash experiments/speedrun_ablations/run.sh
#   SIZES="nano" STEPS=300 SEEDS=1,2,3,4,5 WORKERS=2 ONLY="base modern" bash .../run.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python}
SIZES=${SIZES:-"nano wide"}
SEEDS=${SEEDS:-1,2,3,4,5}
WORKERS=${WORKERS:-2}
ONLY=${ONLY:-}
RUNS=${RUNS:-$HERE/runs}

size_overrides() {  # nano: nanoGPT's 4 x 128; wide: 6 x 192, 200 steps; validating every tenth
  case "$1" in
    nano) echo "trainer.max_steps=${STEPS:-300} trainer.val_check_interval=${VAL_EVERY:-30}" ;;
    wide) echo "model.n_layer=6 model.n_embd=192 model.n_head=6 trainer.max_steps=${WIDE_STEPS:-200} trainer.val_check_interval=${WIDE_VAL_EVERY:-20}" ;;
    *) echo "unknown size $1 (nano or wide)" >&2; exit 2 ;;
  esac
}

reference() {
  case "$1" in
    base) echo "experiment=shakespeare_char" ;;
    modern) echo "experiment=modern_baseline" ;;
  esac
}

jobs=()
while IFS='|' read -r name ref overrides; do
  name=$(echo "$name" | xargs); ref=$(echo "$ref" | xargs)
  [[ -z "$name" || "$name" == \#* ]] && continue
  if [[ -n "$ONLY" && " $ONLY " != *" $name "* ]]; then continue; fi
  for size in $SIZES; do
    dir="$RUNS/$size/$name"
    n_seeds=$(echo "$SEEDS" | tr ',' '\n' | wc -l)
    done_count=$(ls "$dir"/*/summary.json 2>/dev/null | xargs -r grep -l '"finished"' | wc -l || true)
    if [[ "$done_count" -ge "$n_seeds" ]]; then continue; fi
    steps_over=$(size_overrides "$size")
    jobs+=("$(reference "$ref") $steps_over $overrides seed=$SEEDS hydra.sweep.dir=$dir")
  done
done < "$HERE/configs.txt"

common="data.val_batches=20 callbacks.sample_text=null callbacks.progress_bar.refresh_rate=0 logger=csv"
echo "${#jobs[@]} configurations to run"
printf '%s\n' "${jobs[@]}" | xargs -P "$WORKERS" -I{} bash -c \
  "OMP_NUM_THREADS=1 $PY -m gptlab.train --multirun {} $common \
     'checkpoint.every_n_steps=\${trainer.max_steps}' \
     'hydra.sweep.subdir=\${seed}' > /dev/null 2>&1 || echo 'failed: {}' >&2"

#!/usr/bin/env bash
# End-to-end time of nanoGPT's CPU recipe for Tiny Shakespeare (char level) vs
# `python -m gptlab.train experiment=shakespeare_char`, run alternately, start-up to
# the end of the last step, with the final validation loss of each.
#
#   NANOGPT_DIR=/path/to/nanoGPT ROUNDS=2 bash benchmarks/vs_nanogpt.sh
#
# nanoGPT is not part of gptlab: point NANOGPT_DIR at your own checkout. Its
# data/shakespeare_char/prepare.py must have been run (it needs input.txt; copy
# tinyshakespeare.txt there to skip the download). gptlab reads the same text from its
# data cache (GPTLAB_DATA_DIR/corpora/tinyshakespeare.txt) or downloads it.
# Run on an otherwise idle machine: two torch jobs on two cores slow each other 3-8x.
set -euo pipefail
: "${NANOGPT_DIR:?set NANOGPT_DIR to a nanoGPT checkout}"
ROUNDS=${ROUNDS:-1}
STEPS=${STEPS:-2000}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d)
PY=${PYTHON:-python}

run_nanogpt() {
  (cd "$NANOGPT_DIR" && "$PY" train.py config/train_shakespeare_char.py --device=cpu --compile=False \
     --eval_iters=20 --log_interval=100 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 \
     --n_embd=128 --max_iters="$STEPS" --lr_decay_iters="$STEPS" --dropout=0.0 --out_dir="$OUT/nanogpt")
}

run_gptlab() {
  (cd "$HERE" && "$PY" -m gptlab.train experiment=shakespeare_char trainer.max_steps="$STEPS" \
     callbacks.progress_bar.refresh_rate=0 logger=none hydra.run.dir="$OUT/gptlab")
}

# loop_s: gptlab's training loop alone (steps and validations, from its summary.json), so
# the rest of "seconds" is start-up and shut-down; nanoGPT prints no such total.
printf '%-8s %-6s %10s %10s %12s %8s\n' run round seconds tokens/s final_val loop_s
for round in $(seq 1 "$ROUNDS"); do
  for name in nanogpt gptlab; do
    start=$(date +%s.%N)
    log=$("run_$name" 2>&1)
    end=$(date +%s.%N)
    secs=$(awk "BEGIN {print $end - $start}")
    tps=$(awk "BEGIN {printf \"%d\", $STEPS * 12 * 64 / $secs}")
    # both print "val loss <x>" at each evaluation; the last one is after the final step
    val=$(echo "$log" | { grep -oE "val loss [0-9.]+" || true; } | tail -1 | awk '{print $3}')
    val=${val:--}  # no validation ran (STEPS below the 250-step interval)
    loop="-"
    if [ "$name" = gptlab ]; then
      loop=$("$PY" -c "import json, sys; print(round(json.load(open(sys.argv[1]))['wall_time'], 1))" "$OUT/gptlab/summary.json")
    fi
    printf '%-8s %-6s %10.1f %10s %12s %8s\n' "$name" "$round" "$secs" "$tps" "$val" "$loop"
  done
done
rm -rf "$OUT"

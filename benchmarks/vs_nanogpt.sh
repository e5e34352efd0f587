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
#
# MODE=speedrun SEEDS=5: per seed, alternately, nanoGPT's recipe (seed 1337+seed-1, via a
# config file that shifts its hard-coded torch.manual_seed(1337 + seed_offset); nanoGPT's
# configurator has no seed key) and `experiment=shakespeare_speedrun seed=<seed>`, each
# timed end to end; both final models scored on the whole validation split
# (gptlab.evaluate; benchmarks/speedrun_score_nanogpt.py for ckpt.pt), then
# benchmarks/speedrun_stats.py: mean time ratio, mean loss ± se, one-sided p-values.
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

if [ "${MODE:-}" = speedrun ]; then
  SEEDS=${SEEDS:-5}
  TABLE=${TABLE:-$OUT/speedrun.tsv}
  echo "# seed nanogpt_s nanogpt_loss gptlab_s gptlab_loss" >"$TABLE"
  for seed in $(seq 1 "$SEEDS"); do
    printf 'import torch\n_ms = torch.manual_seed\ntorch.manual_seed = lambda s: _ms(s + %d)\n' \
      "$((seed - 1))" >"$OUT/seed.py"
    start=$(date +%s.%N)
    (cd "$NANOGPT_DIR" && "$PY" train.py config/train_shakespeare_char.py "$OUT/seed.py" --device=cpu \
       --compile=False --eval_iters=20 --log_interval=100 --block_size=64 --batch_size=12 --n_layer=4 \
       --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0 \
       --out_dir="$OUT/nanogpt$seed" >"$OUT/nanogpt$seed.log" 2>&1)
    ns=$(awk "BEGIN {print $(date +%s.%N) - $start}")
    start=$(date +%s.%N)
    (cd "$HERE" && "$PY" -m gptlab.train experiment=shakespeare_speedrun seed="$seed" \
       logger=none hydra.run.dir="$OUT/gptlab$seed" >"$OUT/gptlab$seed.log" 2>&1)
    gs=$(awk "BEGIN {print $(date +%s.%N) - $start}")
    nl=$("$PY" "$HERE/benchmarks/speedrun_score_nanogpt.py" "$NANOGPT_DIR" "$OUT/nanogpt$seed/ckpt.pt" | tail -1)
    gl=$(cd "$HERE" && "$PY" -m gptlab.evaluate ckpt="$OUT/gptlab$seed/checkpoints/last.ckpt" \
       data=shakespeare hydra.run.dir="$OUT/eval$seed" 2>/dev/null | grep -oE "loss [0-9.]+" | awk '{print $2}')
    echo "$seed $ns $nl $gs $gl" | tee -a "$TABLE"
  done
  "$PY" "$HERE/benchmarks/speedrun_stats.py" "$TABLE"
  rm -rf "$OUT"
  exit 0
fi

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

#!/usr/bin/env bash
# The study: one small GPT-2-tokenizer model trained on Tiny Shakespeare for 1,500 steps,
# checkpointed every 250, and each checkpoint scored on HellaSwag (a fixed 3,000 of its
# 10,042 items) and on CORE's 18 available tasks (the same 100 items of each).
#   RUN=/tmp/study/run HELLASWAG_TEXT_JSONL=/tmp/study/hellaswag_val_text.jsonl \
#     bash experiments/downstream_eval/run.sh
# Train first (the run folder this reads):
#   python -m gptlab.train model=nano tokenizer=gpt2 data=shakespeare trainer.max_steps=1500 \
#     trainer.val_check_interval=250 checkpoint.every_n_steps=250 checkpoint.keep_last=null \
#     hydra.run.dir=$RUN
set -euo pipefail
here=$(dirname "$0")
out=${OUT:-$here/results}
mkdir -p "$out"
for step in 250 500 750 1000 1250 1500; do
  ckpt=$RUN/checkpoints/step$(printf %06d "$step").ckpt
  until [ -f "$ckpt" ]; do sleep 20; done
  [ -f "$out/hellaswag-$step.json" ] || python -m gptlab.evaluate ckpt="$ckpt" \
    tasks="[$here/hellaswag_text.yaml]" limit=3000 progress=false output="$out/hellaswag-$step.json"
  [ -f "$out/core18-$step.json" ] || python -m gptlab.evaluate ckpt="$ckpt" \
    tasks="[$here/core_available.yaml]" limit=100 progress=false output="$out/core18-$step.json"
done

#!/usr/bin/env bash
# The CUDA checks in one go, for a session that is lent a GPU: run from the repository root.
#
#   bash benchmarks/gpu.sh [out_dir]
#
# 1. Issue 9, goal 5: gpt124m at 16 x 1024 tokens, bf16 autocast, SDPA (flash) attention,
#    torch.compile, through the real LightningModule + Trainer and a bare loop; MFU against
#    the H100/H200 dense bf16 peak (989 TFLOP/s). Then the same uncompiled, beside
#    transformers' GPT2LMHeadModel.
# 2. The Hydra CLI on the GPU: `python -m gptlab.train trainer=gpu model=gpt124m ...
#    trainer.compile=true` for a few steps (tokenizer, data, fused AdamW, bf16, checkpoint,
#    sample), offline: the Tiny Shakespeare text and GPT-2's ranks are read from
#    GPTLAB_SEED_DIR (default .devdata/) when the caches are empty.
# 3. The tests that only a GPU can run (a real CUDA out-of-memory error).
#
# Each part has its own time limit, so a slow one cannot take the others' time; every
# log lands in out_dir.
set -uo pipefail
out=${1:-${OUT:-gpu_out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
seed=$(realpath "${GPTLAB_SEED_DIR:-.devdata}")
cache=$(mktemp -d)
export GPTLAB_DATA_DIR=$cache/data TIKTOKEN_CACHE_DIR=$cache/tiktoken WANDB_MODE=offline
mkdir -p "$GPTLAB_DATA_DIR/corpora" "$TIKTOKEN_CACHE_DIR"
[ -f "$seed/tinyshakespeare.txt" ] && cp "$seed/tinyshakespeare.txt" "$GPTLAB_DATA_DIR/corpora/"
# tiktoken names its cache file by the sha1 of the encoding's URL.
[ -f "$seed/r50k_base.tiktoken" ] && cp "$seed/r50k_base.tiktoken" "$TIKTOKEN_CACHE_DIR/0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/device.txt"

echo "== 1. training step, gpt124m 16x1024 bf16, compiled"
timeout 270 python benchmarks/train_throughput.py --case gpt124m_gpu --precision bf16-mixed --compile \
    --steps 15 --rounds 2 --peak-gflops 989000 2>&1 | tee "$out/train_compiled.txt" | grep -v Warning
echo "== 1b. the same, not compiled, beside transformers"
timeout 110 python benchmarks/train_throughput.py --case gpt124m_gpu --precision bf16-mixed --hf \
    --steps 15 --rounds 2 --peak-gflops 989000 2>&1 | tee "$out/train_eager.txt" | grep -v Warning

echo "== 2. the CLI on the GPU"
timeout 150 python -m gptlab.train trainer=gpu model=gpt124m data=shakespeare tokenizer=gpt2 trainer.compile=true \
    data.batch_size=16 trainer.max_steps=40 trainer.val_check_interval=20 data.val_batches=4 \
    hydra.run.dir="$cache/run" 2>&1 | tee "$out/cli.txt" | tail -25
ls -la "$cache/run/checkpoints" 2>&1 | tee -a "$out/cli.txt"

echo "== 3. GPU-only tests"
GPTLAB_SHARED_DATA=$seed timeout 60 python -m pytest -q -p no:cacheprovider tests/test_guards.py -k cuda 2>&1 | tee "$out/tests.txt" | tail -5

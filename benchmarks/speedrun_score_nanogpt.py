"""Score a nanoGPT ckpt.pt on the whole Tiny Shakespeare validation split, as
`python -m gptlab.evaluate data=shakespeare` scores a gptlab checkpoint: every token of
val.bin predicted once, in non-overlapping windows of the model's block size.

nanoGPT is not part of gptlab: its model.py is imported from NANOGPT_DIR at run time.

    python benchmarks/speedrun_score_nanogpt.py <nanoGPT dir> <out_dir>/ckpt.pt
"""

from __future__ import annotations

import contextlib
import math
import sys

import numpy as np
import torch


def main() -> None:
    nanogpt_dir, ckpt_path = sys.argv[1], sys.argv[2]
    sys.path.insert(0, nanogpt_dir)
    from model import GPT, GPTConfig  # nanoGPT's own

    ckpt = torch.load(ckpt_path, map_location="cpu")
    with contextlib.redirect_stdout(sys.stderr):  # nanoGPT prints its parameter count
        model = GPT(GPTConfig(**ckpt["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    model.eval()
    data = np.memmap(f"{nanogpt_dir}/data/shakespeare_char/val.bin", dtype=np.uint16, mode="r")
    ids = torch.from_numpy(data.astype(np.int64))
    block = ckpt["model_args"]["block_size"]
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, block):
            x = ids[start : start + block][None]
            y = ids[start + 1 : start + 1 + block][None]
            x = x[:, : y.shape[1]]
            logits, _ = model(x, y)
            loss = torch.nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum"
            )
            total += loss.item()
            count += y.numel()
    print(f"{total / count:.6f}")  # the one line vs_nanogpt.sh reads
    assert math.isfinite(total)


if __name__ == "__main__":
    main()

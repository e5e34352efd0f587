"""Turn klosax/hellaswag_text_data's ``hellaswag_val_full.txt`` into a task jsonl.

The text file holds six lines per item: "<activity label>: <ctx>", the gold index, and
the four endings. Usage: ``python hellaswag_from_text.py hellaswag_val_full.txt out.jsonl``.
"""

import json
import sys


def convert(text_path: str, out_path: str) -> int:
    with open(text_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    n = 0
    with open(out_path, "w", encoding="utf-8") as out:
        for i in range(0, len(lines) - 5, 6):
            item = {"query": lines[i], "label": int(lines[i + 1]), "endings": lines[i + 2 : i + 6]}
            out.write(json.dumps(item) + "\n")
            n += 1
    return n


if __name__ == "__main__":
    print(convert(sys.argv[1], sys.argv[2]), "items")

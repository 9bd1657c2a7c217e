"""Write the small instruction set the finetuning demo and tests train on (scripts/data/sft_tasks.jsonl).

Short string and arithmetic tasks whose answers follow from the prompt, so even a tiny model
can learn them and its SFT validation loss falls within minutes on CPU. Deterministic (a fixed
seed): running it again rewrites the same file. Each line is
``{"prompt": "<task>: <input>\\n=> ", "response": "<answer>"}`` and fits in 64 bytes (the
byte-level tokenizer's tokens), so it suits a seq_length of 64.

    python scripts/make_sft_tasks.py [--count 320] [--output scripts/data/sft_tasks.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data" / "sft_tasks.jsonl"


def _word(rng: random.Random, lo: int = 3, hi: int = 8) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


def _task(rng: random.Random) -> tuple[str, str]:
    """One (prompt, response) pair of a randomly chosen task."""
    kind = rng.randrange(6)
    if kind == 0:
        w = _word(rng)
        return f"reverse: {w}", w[::-1]
    if kind == 1:
        w = _word(rng)
        return f"upper: {w}", w.upper()
    if kind == 2:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        return f"add: {a}+{b}", str(a + b)
    if kind == 3:
        w = _word(rng)
        return f"sort: {w}", "".join(sorted(w))
    if kind == 4:
        w, n = _word(rng, 2, 4), rng.randint(2, 3)
        return f"repeat {n}: {w}", w * n
    w = _word(rng)
    return f"first last: {w}", w[0] + w[-1]


def make_tasks(count: int, seed: int = 0) -> list[dict]:
    """``count`` prompt/response records, the same for the same seed."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        prompt, response = _task(rng)
        records.append({"prompt": f"{prompt}\n=> ", "response": response})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=320, help="number of samples (default 320)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSONL file to write")
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        for record in make_tasks(args.count, args.seed):
            f.write(json.dumps(record) + "\n")
    print(f"wrote {args.count} samples to {args.output}")


if __name__ == "__main__":
    main()

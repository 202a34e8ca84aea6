"""Measure the local LLM backend's speed: load time and ms per sentence for each scoring path.

Run with ``make benchmark`` or ``python benchmarks/llm_speed.py [--sentences 32]``.
Sentences come from ADE Corpus V2 when ``L2D_DATA_DIR`` is set, otherwise from
a short invented list. Prints one line per figure; run it on an idle machine,
since another process on the same cores changes every number.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from l2d_utils.config import PACKAGED_QWEN
from l2d_utils.llm.local import LocalBackend, converted_packaged_llm, softmax
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT

INVENTED = [
    "Fatal hepatitis due to ketoconazole.",
    "Blood pressure was recorded at each visit.",
    "A generalized rash appeared two days after starting allopurinol.",
    "The trial enrolled 120 adults with type 2 diabetes.",
]


def sentences(count: int) -> list[str]:
    """Return ``count`` ADE sentences (or invented ones without data), cycling if needed."""
    if os.environ.get("L2D_DATA_DIR"):
        from l2d_utils.data import load_ade_corpus

        texts = load_ade_corpus().sample(n=count, random_state=0)["text"].tolist()
    else:
        texts = INVENTED
    return [texts[i % len(texts)] for i in range(count)]


def main() -> None:
    """Print load time and ms per sentence for plain, prefix-cached and batched scoring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=32, help="sentences per scoring path (default 32)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the batched path (default 8)")
    arguments = parser.parse_args()
    texts = sentences(arguments.sentences)
    print(f"threads: {torch.get_num_threads()}, sentences per path: {len(texts)}")

    started = time.monotonic()
    converted_packaged_llm()
    print(f"conversion check (converts only on the first run): {time.monotonic() - started:.1f} s")
    backend = LocalBackend(PACKAGED_QWEN, batch_size=arguments.batch_size)
    started = time.monotonic()
    backend._load()
    backend.score_cached(texts[:1], ADE_PAPER_PROMPT, batch_size=1)  # page the weights in
    print(f"load of converted weights plus one warm-up sentence: {time.monotonic() - started:.1f} s")

    timings = {}
    probabilities = {}
    for name, score in [
        ("plain", lambda: backend.score_plain(texts, ADE_PAPER_PROMPT)),
        ("prefix-cached", lambda: backend.score_cached(texts, ADE_PAPER_PROMPT, batch_size=1)),
        (f"prefix-cached, batch {arguments.batch_size}", lambda: backend.score_cached(texts, ADE_PAPER_PROMPT)),
    ]:
        started = time.monotonic()
        probabilities[name] = softmax(score())
        timings[name] = 1000.0 * (time.monotonic() - started) / len(texts)
        print(f"{name}: {timings[name]:.0f} ms per sentence")
    plain = timings["plain"]
    for name, value in timings.items():
        print(f"speed-up over plain, {name}: {plain / value:.1f}x")
    reference = probabilities["plain"]
    for name, value in probabilities.items():
        print(f"max |p - p_plain|, {name}: {abs(value - reference).max():.4f}")


if __name__ == "__main__":
    main()

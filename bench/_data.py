"""The benchmarks' texts: samples-1680 from ``../shared/datasets``, read one way everywhere."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

DATASET = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "datasets"
    / "openai-moderation-samples-1680.jsonl.gz"
)


def load_texts(shuffled: bool = True) -> list[str]:
    """The dataset's prompts; shuffled with a fixed seed, so every run sees one order."""
    with gzip.open(DATASET, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["prompt"] for line in f if line.strip()]
    if shuffled:
        random.Random(3).shuffle(texts)
    return texts


def unique_texts(texts: list[str], count: int) -> list[str]:
    """``count`` texts cycling through ``texts``, each made unique (" #<n>") so no cache hits."""
    return [f"{texts[i % len(texts)]} #{i}" for i in range(count)]

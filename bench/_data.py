"""The benchmarks' texts: samples-1680 from ``../shared/datasets``, read one way everywhere."""

from __future__ import annotations

import csv
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


HATECHECK = DATASET.parent / "multilingual-hatecheck"


def load_chat_texts() -> list[str]:
    """Multilingual HateCheck's cases in the five shared languages: chat-length texts
    (an empty list where the files are not there)."""
    texts: list[str] = []
    for path in sorted(HATECHECK.glob("*.csv.gz")):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            texts += [row["test_case"] for row in csv.DictReader(f)]
    return texts


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

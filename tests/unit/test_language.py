"""Language detection: the bundled model, short texts left unknown, romanised Hindi."""

from __future__ import annotations

import pytest

from worker.language import LanguageDetector, LazyLanguage


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Ich bringe dich morgen zum Bahnhof, versprochen.", "de"),
        ("¿Nos vemos mañana en la biblioteca?", "es"),
        ("Je suis en retard, le train est bloqué à Lyon.", "fr"),
        ("Você vem almoçar com a gente amanhã?", "pt"),
        ("The meeting moved to Thursday afternoon.", "en"),
        ("mujhe nahi pata tum kab aa rahe ho", "hi"),  # Hindi in Latin letters
        ("kal office mai bahut kaam tha yaar", "hi"),
        ("明天我们一起去公园吧", "zh"),
        ("Привет, как дела?", "ru"),
    ],
)
def test_languages_are_told_apart(detector: LanguageDetector, text: str, code: str):
    assert detector.detect(text) == code


@pytest.mark.parametrize("text", ["", "😀😀😀", "12345", "lol", "fuck you"])
def test_too_little_to_tell_is_none(detector: LanguageDetector, text: str):
    assert detector.detect(text) is None


def test_romanised_hindi_needs_more_than_one_shared_word(detector: LanguageDetector):
    # "se", "to" and "ki" are words in other languages too; alone they say nothing
    assert detector.detect("Se você for, me avisa") == "pt"
    assert detector.detect("Ki is a unit prefix used to mean 1024") == "en"


def test_a_lazy_language_detects_once_and_only_when_asked(detector: LanguageDetector):
    calls = []

    class Counting(LanguageDetector):
        def detect_scored(self, text: str) -> tuple[str | None, float]:
            calls.append(text)
            return super().detect_scored(text)

    counting = Counting()
    language = LazyLanguage("Wir sehen uns morgen früh am Bahnhof.", counting)
    assert calls == []
    assert language.code == "de" and language.code == "de"
    assert len(calls) == 1


def test_given_language_skips_detection():
    language = LazyLanguage("whatever the text says", None, given="fr")
    assert language.code == "fr"
    assert LazyLanguage("no detector, nothing given", None).code is None


def test_a_rule_is_set_aside_only_when_the_text_is_surely_elsewhere(detector: LanguageDetector):
    german = LazyLanguage("Wir sehen uns morgen früh am Bahnhof, bis dann.", detector)
    assert german.rules_out(("es",)) and not german.rules_out(("de", "es"))
    short = LazyLanguage("Mátate", detector)  # misread as Hungarian, but not surely
    assert not short.rules_out(("es",))
    assert not LazyLanguage("🙂", detector).rules_out(("es",))

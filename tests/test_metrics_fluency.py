"""Fluency measures: definitions on hand-counted texts, the degenerate rule, the tokenizer path."""

from __future__ import annotations

import json
import zlib

import pytest

from esr_analysis.metrics import fluency as fl
from esr_analysis.metrics.fluency import FluencyMeasures, fluency_measures, is_degenerate

PROSE = (
    "To remove a red wine stain from a carpet, first blot the stain with a clean cloth to absorb as much "
    "wine as possible. Do not rub, because rubbing spreads the stain. Mix one tablespoon of dish soap with "
    "one tablespoon of white vinegar and two cups of warm water. Sponge the stain with the solution and blot "
    "until the liquid is absorbed. Rinse with cold water and blot dry. If the stain remains, apply a paste "
    "of baking soda and water, let it dry, and vacuum it up."
)


def test_hand_counted_measures():
    # tokens: a b c a b c a b -> 4-grams: abca bcab cabc abca bcab -> 3 distinct of 5
    m = fluency_measures("a b c a b c a b")
    assert m.n_tokens == 8
    assert m.repetition_rate == pytest.approx(1 - 3 / 5)
    # bigrams: ab bc ca ab bc ca ab -> 3 distinct of 7
    assert m.distinct_2 == pytest.approx(3 / 7)
    raw = b"a b c a b c a b"
    assert m.compression_ratio == pytest.approx(len(raw) / len(zlib.compress(raw, 9)))
    assert m.word_share == 1.0


def test_punctuation_runs_are_tokens_and_not_words():
    m = fluency_measures("``` ``` hello")
    assert m.n_tokens == 3 and m.word_share == pytest.approx(1 / 3)


def test_short_and_empty_texts():
    empty = fluency_measures("")
    assert empty == FluencyMeasures(0.0, 1.0, 0.0, False, 0, 1.0)
    assert fluency_measures("Yes.").degenerate is False


@pytest.mark.parametrize(
    ("text", "degenerate"),
    [
        (PROSE, False),
        ("the the the the the", True),  # the paper's degraded rule
        ("The the THE the, the.", True),  # same rule after case folding
        ("a a a a a a", False),  # one-character words, too short for the n-gram rules
        (" ".join(["lava flows and"] * 8), True),  # phrase loop: repetition_rate high
        ("\n".join(["```"] * 20), True),  # markdown fences: no words
        ("money rent " * 6 + "house " + "money rent " * 6, True),  # alternating two-word loop
        ("Mix flour, water, yeast and salt; knead the dough for ten minutes; let it rise; bake.", False),
    ],
)
def test_degenerate_rule(text: str, degenerate: bool):
    assert is_degenerate(text) is degenerate
    assert fluency_measures(text).degenerate is degenerate


def test_long_compressible_text_is_degenerate():
    text = "Here is the answer you need. " * 12
    m = fluency_measures(text)
    assert m.compression_ratio > fl.COMPRESSION_MAX and m.degenerate


def test_prose_measures_are_fluent():
    m = fluency_measures(PROSE)
    assert m.repetition_rate < 0.05 and m.distinct_2 > 0.9 and 1.2 < m.compression_ratio < 2.5


class _CharTokenizer:
    """A stand-in tokenizer: one id per character."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert add_special_tokens is False
        return [ord(c) for c in text]


def test_tokenizer_ids_are_counted():
    m = fluency_measures("abab", tokenizer=_CharTokenizer())
    assert m.n_tokens == 4
    assert m.distinct_2 == pytest.approx(2 / 3)  # ab ba ab
    assert m.repetition_rate == 0.0  # one 4-gram
    assert m.word_share == 1.0


def test_as_dict_is_json_ready():
    d = fluency_measures(PROSE).as_dict()
    assert set(d) == {"repetition_rate", "distinct_2", "compression_ratio", "degenerate", "n_tokens", "word_share",
                      "doubled_words", "doubled_word_rate"}
    json.dumps(d)


def test_bad_input_fails_clearly():
    with pytest.raises(TypeError, match="needs a str"):
        fluency_measures(None)  # type: ignore[arg-type]


def test_doubled_words_counts_adjacent_repeats_independently():
    text = "Then it must must be be checked, a a test (single letters do not count); The the end."
    words = [w.lower() for w in text.replace(",", " ").replace(";", " ").replace("(", " ").replace(")", " ")
             .replace(".", " ").split()]
    expected = sum(1 for a, b in zip(words, words[1:], strict=False) if a == b and len(a) > 1)
    assert expected == 3
    m = fluency_measures(text)
    assert m.doubled_words == 3
    assert m.doubled_word_rate == pytest.approx(3 / len(words))


@pytest.mark.parametrize(
    ("text", "degenerate"),
    [
        # grammar collapse with short doubled runs (no run of 5, no 4-gram loop)
        ("To fix the shelf, be attached to the wall to be be held and be be measured before the be installed "
         "at the right height so it can be be level.", True),
        ("Pour the soup into bowls, fit fit the lids, and store them for later use in the fridge.", False),
        # one stray doubled word in fluent prose is not degenerate
        ("Rinse the rice until the water runs clear. Use the the same pot to cook it, with a tight lid, on low "
         "heat for twelve minutes, then let it rest.", False),
        ("Preheat the oven. Mix the flour and sugar, add the eggs, then bake for twenty minutes.", False),
    ],
)
def test_doubled_word_rule(text: str, degenerate: bool):
    assert fluency_measures(text).degenerate is degenerate

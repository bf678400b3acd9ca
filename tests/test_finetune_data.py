"""finetune.data: segments, token-by-token loss masks, the paper's mix formula, segments files, prompt sets."""

from __future__ import annotations

import json

import pytest

from esr_analysis.finetune.data import (
    IGNORE_INDEX,
    end_of_turn_text,
    load_acknowledgements,
    mix_counts,
    mix_examples,
    normal_example,
    read_segments_jsonl,
    self_correction_example,
    tokenize_example,
    write_segments_jsonl,
)
from esr_analysis.paths import DATA_DIR


@pytest.fixture(scope="module")
def tok():
    from esr_analysis.models.tiny import tiny_tokenizer

    return tiny_tokenizer()


def _ids(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_end_of_turn_is_what_the_template_closes_an_assistant_turn_with(tok):
    assert end_of_turn_text(tok) == "<|end|>"


def test_self_correction_mask_token_by_token(tok):
    ex = self_correction_example(tok, "How do I fold a map?", "Bees make honey. Hives are warm.",
                                 "Wait, that is off-topic.", "Fold it along the creases.")
    out = tokenize_example(tok, ex)
    prefix = "<bos><|user|>How do I fold a map?<|end|><|assistant|>" + "Bees make honey. Hives are warm. "
    trained = "Wait, that is off-topic. Fold it along the creases.<|end|>"
    assert ex.text == prefix + trained
    expect_ids = _ids(tok, prefix) + _ids(tok, trained)
    expect_labels = [IGNORE_INDEX] * len(_ids(tok, prefix)) + _ids(tok, trained)
    assert out.input_ids == expect_ids
    assert out.labels == expect_labels
    # every position: either ignored (prompt + opening) or equal to its own token (ack + answer + end of turn)
    n_prefix = len(_ids(tok, prefix))
    for i, (t, lab) in enumerate(zip(out.input_ids, out.labels, strict=True)):
        assert lab == (IGNORE_INDEX if i < n_prefix else t)
    assert out.labels[-1] == tok.convert_tokens_to_ids("<|end|>")


def test_normal_example_trains_the_answer_and_end_of_turn_only(tok):
    out = tokenize_example(tok, normal_example(tok, "How do I fold a map?", "Fold it along the creases."))
    n_prompt = len(_ids(tok, "<bos><|user|>How do I fold a map?<|end|><|assistant|>"))
    assert out.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert out.labels[n_prompt:] == out.input_ids[n_prompt:] == _ids(tok, "Fold it along the creases.<|end|>")


def test_cut_to_max_length_and_nothing_trained_is_an_error(tok):
    ex = normal_example(tok, "How do I fold a map?", "Fold it along the creases.")
    full = tokenize_example(tok, ex)
    cut = tokenize_example(tok, ex, max_length=len(full.input_ids) - 2)
    assert cut.input_ids == full.input_ids[:-2] and cut.labels == full.labels[:-2]
    with pytest.raises(ValueError, match="no trained tokens"):
        tokenize_example(tok, ex, max_length=3)
    with pytest.raises(ValueError, match="answer"):
        normal_example(tok, "q?", "   ")


@pytest.mark.parametrize(("n", "n_normal", "p", "expect"), [
    (918, 760, 0.1, (91, 760)), (918, 760, 0.5, (459, 459)), (918, 760, 0.9, (826, 91)),
    (918, 760, 0.3, (275, 641)), (100, 10, 0.5, (50, 10)), (7, 0, 1.0, (7, 0)),
])
def test_mix_counts_follow_the_paper_formula(n, n_normal, p, expect):
    assert mix_counts(n, n_normal, p) == expect
    # independent arithmetic of the formula
    n_sc = int(n * p)
    assert expect == (n_sc, min(int(n_sc * (1 - p) / p), n_normal))


def test_mix_counts_reject_bad_fractions():
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            mix_counts(10, 10, p)


def test_mix_is_seeded_and_draws_without_replacement(tok):
    sc = [normal_example(tok, f"q{i}?", f"sc {i}") for i in range(20)]
    sc = [type(e)(e.segments, kind="self_correction") for e in sc]
    normal = [normal_example(tok, f"n{i}?", f"normal {i}") for i in range(30)]
    a = mix_examples(sc, normal, 0.25, seed=42)
    b = mix_examples(sc, normal, 0.25, seed=42)
    c = mix_examples(sc, normal, 0.25, seed=7)
    assert [e.text for e in a] == [e.text for e in b] != [e.text for e in c]
    assert sum(e.kind == "self_correction" for e in a) == 5 and sum(e.kind == "normal" for e in a) == 15
    assert len({e.text for e in a}) == len(a)


def test_segments_jsonl_round_trip_and_authors_format(tmp_path, tok):
    ex = [self_correction_example(tok, "q?", "Off. Topic.", "Wait, no.", "Answer.", meta={"latent": 3}),
          normal_example(tok, "q?", "Answer.")]
    path = write_segments_jsonl(tmp_path / "d.jsonl", ex)
    back = read_segments_jsonl(path)
    assert back == ex and back[0].meta == {"latent": 3}
    authors = tmp_path / "authors.jsonl"  # the axolotl input_output shape: label + text only
    authors.write_text(json.dumps({"segments": [{"label": False, "text": "<p>Off."}, {"label": True, "text": " Wait."}]})
                       + "\n")
    (row,) = read_segments_jsonl(authors)
    assert row.kind == "segments" and [s.trained for s in row.segments] == [False, True]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"segments": [{"text": "x"}]}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_segments_jsonl(bad)
    untrained = tmp_path / "untrained.jsonl"
    untrained.write_text('{"segments": [{"label": false, "text": "x"}]}\n')
    with pytest.raises(ValueError, match="label true"):
        read_segments_jsonl(untrained)


def test_shipped_acknowledgements_are_many_and_varied():
    acks = load_acknowledgements()
    assert len(acks) >= 30
    openings = {a.split()[0].strip(",.").lower() for a in acks}
    assert len(openings) >= 10, "acknowledgements should not all start the same way"
    assert sum(a.lower().startswith("wait") for a in acks) <= len(acks) // 3


def test_training_prompt_sets_are_disjoint_from_the_evaluation_sets():
    from esr_analysis.experiments.prompts import load_prompts

    train = load_prompts(DATA_DIR / "prompts" / "finetune_prompts.txt")
    heldout = load_prompts(DATA_DIR / "prompts" / "finetune_heldout_prompts.txt")
    esr = load_prompts("esr")
    otd = load_prompts("otd_discovery")
    assert len(train) >= 150 and len(heldout) >= 30

    def norm(p):
        return " ".join(p.lower().split())

    sets = {"train": train, "heldout": heldout, "esr": esr, "otd": otd}
    for a in sets:
        for b in sets:
            if a < b:
                assert not {norm(p) for p in sets[a]} & {norm(p) for p in sets[b]}, (a, b)


def test_an_answer_cut_at_the_token_limit_is_trained_without_end_of_turn(tok):
    eot = tok.convert_tokens_to_ids("<|end|>")
    cut_sc = tokenize_example(tok, self_correction_example(tok, "q?", "Off. Topic.", "Wait.", "Step one is", complete=False))
    cut_normal = tokenize_example(tok, normal_example(tok, "q?", "Step one is", complete=False))
    full = tokenize_example(tok, normal_example(tok, "q?", "Step one is"))
    assert full.labels[-1] == eot
    for t in (cut_sc, cut_normal):
        assert eot not in [x for x in t.labels if x != IGNORE_INDEX]
        assert t.labels[-1] == t.input_ids[-1] != eot


def test_answer_checks():
    from esr_analysis.finetune.build import answer_problem, first_sentences, opening_problem

    text = "Rinse the pan with warm water, then scrub it gently with a soft brush and dry it well before storing."
    assert answer_problem(text, True) is None
    assert answer_problem(text, False) == "cut_at_token_limit"
    assert answer_problem(text, False, keep_cut=True) is None
    assert answer_problem("I'm sorry, but I can't assist with that request at all, it is not something I do.",
                          True) == "refusal"
    assert answer_problem(text + " Wait, that's not right. " + text, True) == "restart_language"
    assert first_sentences("One is here. Two is there! Three? Four", 2) == ("One is here. Two is there!", 2)
    assert first_sentences("No end", 3) == ("", 0)
    assert opening_problem("Black holes bend light near them.", 1, 2) == "too_few_sentences"
    assert opening_problem("Black holes bend light near them. Stars orbit them quickly.", 2, 2) is None


def test_steering_vectors_match_relative_units_and_name_examples_without_steering(tok):
    import torch

    from esr_analysis.finetune.data import self_correction_example
    from esr_analysis.finetune.organism import steering_vectors
    from esr_analysis.sae.random_sae import random_sae

    sae = random_sae(16, 32, seed=3)
    rows = [self_correction_example(tok, "How do I bake bread?", "Stars are hot. Planets orbit them.", "Wait.",
                                    "Mix flour and water.", meta={"layer": 1, "latent": lat, "strength_relative": r})
            for lat, r in ((4, 0.5), (7, 0.9), (4, 0.5))]
    vecs = steering_vectors(rows, sae, median_norm=20.0)
    assert set(vecs) == {(1, 4, 0.5), (1, 7, 0.9)}
    for (_, lat, r), v in vecs.items():
        d = sae.W_dec[lat].detach().float()
        assert float(v.norm()) == pytest.approx(r * 20.0, rel=1e-5)
        assert float(torch.nn.functional.cosine_similarity(v, d, dim=0)) == pytest.approx(1.0, abs=1e-6)
    bare = self_correction_example(tok, "How do I bake bread?", "Stars are hot. Planets orbit.", "Wait.", "Mix.")
    with pytest.raises(ValueError, match="without its steering"):
        steering_vectors([bare], sae, median_norm=20.0)


def test_offtopic_cosine_ranks_another_subject_below_the_prompts_own():
    from esr_analysis.finetune.build import _prompt_cosines

    p = "How do you make a pot of black tea?"
    cos = _prompt_cosines({p: [("Boil water, then steep the black tea leaves in the pot for four minutes.", 1, 0.5),
                                ("To run a SQL query, open the database console and select the table.", 2, 0.5)]})
    assert cos[(p, 0)] > 0.5 > 0.3 > cos[(p, 1)]


def test_opening_scope_steers_the_prompt_and_opening_only(tok):
    from esr_analysis.finetune.data import normal_example, self_correction_example, tokenize_example
    from esr_analysis.finetune.organism import _steered

    meta = {"layer": 1, "latent": 4, "strength_relative": 0.5}
    ex = self_correction_example(tok, "How do I bake bread?", "Stars are hot. Planets orbit them.", "Wait.",
                                 "Mix flour and water.", meta=meta)
    t = tokenize_example(tok, ex)
    vec = object()
    steering = {(1, 4, 0.5): vec}
    opening = _steered(t, ex, steering, "opening")
    # the first trained token is the acknowledgement's first token; every earlier position is steered
    assert opening.steer_until == t.first_trained
    assert all(lab == IGNORE_INDEX for lab in t.labels[:t.first_trained])
    assert t.labels[t.first_trained] != IGNORE_INDEX
    assert opening.steer_vector is vec and opening.steer_layer == 1
    assert _steered(t, ex, steering, "all").steer_until is None
    normal = normal_example(tok, "How do I bake bread?", "Mix flour and water.")
    assert _steered(tokenize_example(tok, normal), normal, steering, "opening").steer_vector is None

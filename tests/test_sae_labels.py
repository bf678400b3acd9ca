"""Label files: our JSONL(.gz), Neuronpedia exports (JSONL/JSON, .gz) and CSV; shipped labels if present."""

from __future__ import annotations

import gzip
import json

import pytest

from esr_analysis.sae.labels import LatentLabels, context_text, load_label_csv, load_neuronpedia_explanations

NP = [{"modelId": "gemma-2-2b", "layer": "12-gemmascope-res-16k", "index": "1234",
       "description": "references to the ocean", "explanationModelName": "gpt-4o-mini"},
      {"modelId": "gemma-2-2b", "layer": "12-gemmascope-res-16k", "index": "7", "description": "Python code"},
      {"modelId": "gemma-2-2b", "layer": "12-gemmascope-res-16k", "index": "1234", "description": "sea, waves"}]


@pytest.mark.parametrize("form", ["jsonl", "jsonl.gz", "json"])
def test_neuronpedia_export(tmp_path, form):
    path = tmp_path / f"np.{form}"
    text = json.dumps(NP) if form == "json" else "".join(json.dumps(d) + "\n" for d in NP)
    if form.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    for labels in (load_neuronpedia_explanations(path), LatentLabels.load(path)):
        assert labels.label(1234) == "references to the ocean / sea, waves"
        assert labels.label(7) == "Python code"
        assert labels.label(8) == ""
        assert labels.info(1234)["neuronpedia"][0]["explanationModelName"] == "gpt-4o-mini"
        assert labels.search("OCEAN") == [1234]


@pytest.mark.parametrize("header", ["index,label", "index_in_sae,label"])
def test_csv(tmp_path, header):
    path = tmp_path / "labels.csv"
    path.write_text(f'{header},extra\n3,"cats, dogs",x\n10,weddings,\n')
    for labels in (load_label_csv(path), LatentLabels.load(path)):
        assert labels.label(3) == "cats, dogs" and labels.label(10) == "weddings"
        assert labels.info(3)["extra"] == "x" and len(labels) == 2


def test_csv_bad_header(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("feature,name\n1,x\n")
    with pytest.raises(ValueError, match="index,label"):
        load_label_csv(path)


def test_jsonl_round_trip_and_describe(tmp_path):
    labels = LatentLabels({5: {"label": "bread | dough", "density": 0.01, "max_act": 3.2,
                               "contexts": [{"act": 3.2, "text": "knead the [[ dough]] well"}]}})
    labels.save(tmp_path / "l.jsonl.gz")
    back = LatentLabels.load(tmp_path / "l.jsonl.gz")
    assert back.info(5) == labels.info(5)
    text = back.describe(5)
    assert "latent 5: bread | dough" in text and "[[ dough]]" in text
    assert back.describe(6).startswith("latent 6: (no label)")


def test_context_text_marks_token():
    class Tok:
        def decode(self, ids):
            return "".join(f"<{i}>" for i in ids)

    assert context_text(Tok(), [1, 2, 3, 4, 5], 2, before=1, after=1) == "<2>[[<3>]]<4>"


def test_shipped_labels_answer_what_is_latent():
    from esr_analysis.sae.labels import describe_latent, latent_info
    from esr_analysis.sae.loading import shipped_sae_dir

    d = shipped_sae_dir("qwen2.5-coder-0.5b-instruct-l12")  # raises if data/saes lacks it
    assert (d / "labels.jsonl.gz").exists(), "the shipped SAE must ship its labels"
    info = latent_info(1234, "shipped:qwen2.5-coder-0.5b-instruct-l12")
    assert info["index"] == 1234 and "label" in info and "density" in info
    assert describe_latent(1234, "shipped:qwen2.5-coder-0.5b-instruct-l12").startswith("latent 1234:")

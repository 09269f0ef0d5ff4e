"""Hugging Face models (the hf extra): a tiny BERT-style classifier made from a config inside the
test (no downloads) loads as a subject; weights, attention and per-token saliency run on it, and
`talkgen audit DIR --data sentences.txt` writes the report. Bad model folders fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest import run_cli  # noqa: E402

WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] the a cat dog sat on mat ran fast slow good bad movie was very not "
         "film plot").split()
SENTENCES = ["the movie was good", "the film was very bad", "a cat sat on the mat", "the dog ran fast",
             "the plot was not good", "a very slow film", "the cat was bad", "good movie", "the dog sat",
             "not a good plot", "the movie was very very good", "bad"]


def make_bert(directory: Path) -> None:
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64, num_labels=2,
                                  id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bert")
    make_bert(d / "model")
    (d / "sentences.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    (d / "labelled.txt").write_text("".join(f"{'positive' if 'good' in s else 'negative'}\t{s}\n"
                                            for s in SENTENCES), encoding="utf-8")
    return d


def test_a_transformers_directory_is_a_subject(bert_dir):
    from talkgen.analyses.attention import attention_maps
    from talkgen.attribution import token_attributions
    from talkgen.models.hf import load_hf_subject

    s = load_hf_subject(bert_dir / "model", bert_dir / "sentences.txt", "bert")
    assert s.task == "text-classifier" and s.data.classes == ("negative", "positive")
    assert not s.data.labelled
    x = s.data.x_test
    assert x.shape[0] == len(SENTENCES)
    names, maps = attention_maps(s.model, x[:3])
    assert len(maps) == 2 and maps[0].shape[:2] == (3, 2)
    pad = s.card["pad_token_id"]
    # padding gets no attention, and every row is a distribution
    assert float(maps[0][x[:3].unsqueeze(1).unsqueeze(2).expand_as(maps[0]) == pad].abs().max()) == 0.0
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(maps[0].shape[:-1]))
    # IG over token embeddings is complete for the classifier's output
    a = token_attributions(s.model, x[:2], None, method="integrated_gradients", n_steps=64)
    with torch.no_grad():
        emb = s.model.hf.bert.embeddings.word_embeddings
        out = s.model(x[:2])
        target = out.argmax(1)
        handle = emb.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
        base = s.model(x[:2])
        handle.remove()
    span = (out - base).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(a.sum(1), span, rtol=0.02, atol=1e-3)
    labelled = load_hf_subject(bert_dir / "model", bert_dir / "labelled.txt", "bert")
    assert labelled.data.labelled and labelled.data.y_test.tolist() == [int("good" in s) for s in SENTENCES]


def test_audit_of_a_transformers_directory_writes_the_report(bert_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("audit", str(bert_dir / "model"), "--data", str(bert_dir / "sentences.txt"), "--out", str(out),
            "--only", "model-card,weights,attention,saliency,curvature", check=True, timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    analyses = summary["subjects"]["model"]["analyses"]
    for name in ("model-card", "weights", "attention", "saliency"):
        assert analyses[name]["status"] == "ok", (name, analyses[name])
    assert analyses["curvature"]["status"] == "skipped"  # no labels: nothing measured against them
    html = (out / "report.html").read_text()
    assert "no labels were given" in html and "Attention focus" in html


def test_bad_model_folders_fail_in_one_line(bert_dir, tmp_path):
    from click.testing import CliRunner

    from talkgen.cli import cli

    def audit(*args: str):  # in this process: the three refusals need transformers imported once, not three times
        r = CliRunner().invoke(cli, ["audit", *args, "--out", str(tmp_path / "o")])
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        return r.exit_code, r.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = audit(str(empty), "--data", str(bert_dir / "sentences.txt"))
    assert code == 2 and "without config.json" in err and len(err.strip().splitlines()) == 1, err
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((bert_dir / "model" / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    code, err = audit(str(pickled), "--data", str(bert_dir / "sentences.txt"))
    assert code == 2 and "only safetensors" in err and len(err.strip().splitlines()) == 1, err
    bad_label = tmp_path / "bad.txt"
    bad_label.write_text("neutral\tthe cat\n")
    code, err = audit(str(bert_dir / "model"), "--data", str(bad_label))
    assert code == 2 and "unknown label 'neutral'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def make_encoder(directory: Path, pooling: str | None = None) -> None:
    """A BertModel directory (the kind a sentence-embedding download is), random weights from a local config;
    with ``pooling``, sentence-transformers' 1_Pooling/config.json beside it."""
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)
    if pooling:
        (directory / "1_Pooling").mkdir()
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
             "pooling_mode_mean_tokens": pooling == "mean"}))


def test_a_base_model_is_a_sentence_encoder(bert_dir, tmp_path):
    """A BertModel directory loads as a text-encoder: token ids -> the sentence embedding, mean-pooled over the real
    tokens, or the first token's state where its pooling config says CLS; its labels are the file's own names."""
    from talkgen.attribution import Similarity, token_attributions
    from talkgen.models.hf import load_hf_subject

    make_encoder(tmp_path / "mean")
    s = load_hf_subject(tmp_path / "mean", bert_dir / "sentences.txt", "enc")
    assert s.task == "text-encoder" and not s.data.labelled and s.card["pooling"] == "mean"
    x = s.data.x_test[:4]
    pad = s.card["pad_token_id"]
    with torch.no_grad():
        h = s.model.hf(input_ids=x, attention_mask=(x != pad).long()).last_hidden_state
        mask = (x != pad).unsqueeze(-1).float()
        torch.testing.assert_close(s.model(x), (h * mask).sum(1) / mask.sum(1))
    make_encoder(tmp_path / "cls", pooling="cls")
    c = load_hf_subject(tmp_path / "cls", bert_dir / "labelled.txt", "enc")
    assert c.card["pooling"] == "cls" and c.data.labelled and c.data.classes == ("negative", "positive")
    with torch.no_grad():
        torch.testing.assert_close(c.model(x), c.model.hf(input_ids=x, attention_mask=(x != pad).long())
                                   .last_hidden_state[:, 0])
    # IG of the similarity to a reference sentence is complete: the attributions sum to f(x) - f(padding)
    with torch.no_grad():
        refs = s.model(x).roll(-1, 0)
    sim = Similarity(s.model, refs)
    target = torch.zeros(len(x), dtype=torch.long)
    a = token_attributions(sim, x, None, target, method="integrated_gradients", baseline_token=pad, n_steps=128)
    from talkgen.attribution import at_position, input_embedding

    embedding = input_embedding(sim, x[:1])
    f = at_position(sim, embedding, None, x)  # the baseline keeps the sentence's attention mask, as IG's path does
    with torch.no_grad():
        span = f(embedding(x))[:, 0] - f(embedding(torch.full_like(x, pad)))[:, 0]
    torch.testing.assert_close(a.sum(1), span, rtol=0.02, atol=2e-3)


def test_audit_of_a_sentence_encoder(bert_dir, tmp_path):
    make_encoder(tmp_path / "encoder")
    out = tmp_path / "out"
    proc = run_cli("audit", str(tmp_path / "encoder"), "--data", str(bert_dir / "labelled.txt"), "--out", str(out),
                   "--only", "model-card,weights,activations,attention,saliency,probes,loss-landscape,curvature",
                   check=True, timeout=600)
    assert proc.returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    analyses = summary["subjects"]["encoder"]["analyses"]
    for name in ("model-card", "weights", "attention", "saliency", "activations", "probes"):
        assert analyses[name]["status"] == "ok", (name, analyses[name])
    for name in ("loss-landscape", "curvature"):  # an embedding has no loss: skipped, saying why
        assert analyses[name]["status"] == "skipped" and "no target" in analyses[name]["reason"]
    card = analyses["model-card"]["summaries"]
    assert card["embedding_size"]["value"] == 32 and -1 <= card["mean_cosine_similarity"]["value"] <= 1
    assert card["neighbour_label_accuracy"]["n"] == len(SENTENCES)
    html = (out / "report.html").read_text()
    assert "cosine similarity to the next sentence" in html and "probability of the predicted class" not in html


def test_an_lm_head_model_is_a_sequence_model_and_not_an_encoder(bert_dir, tmp_path):
    """GPT2LMHeadModel ends in "Model" but is a causal language model: next-token logits, not an embedding."""
    from talkgen.models.hf import load_hf_subject

    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    cfg = transformers.GPT2Config(vocab_size=len(WORDS), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt")
    tok.save_pretrained(tmp_path / "gpt")
    s = load_hf_subject(tmp_path / "gpt", bert_dir / "sentences.txt", "gpt")
    assert s.task == "sequence-model"
    with torch.no_grad():
        assert s.model(s.data.x_test[:2]).shape[-1] == len(WORDS)


def make_vit(directory: Path, size: int = 8) -> None:
    """A ViTForImageClassification directory from a local config (random weights), with its image processor."""
    cfg = transformers.ViTConfig(image_size=size, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=3,
                                 id2label={0: "cat", 1: "dog", 2: "bird"}, label2id={"cat": 0, "dog": 1, "bird": 2})
    torch.manual_seed(0)
    transformers.ViTForImageClassification(cfg).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
         "image_std": [0.5, 0.5, 0.5]}))


def test_a_vit_directory_audits_on_raw_pixels(tmp_path):
    """A ViTForImageClassification directory is an image classifier: raw 0..255 pixels from an .npz go through its
    preprocessor's rescale and normalisation, its classes are the config's names, and the audit completes; curvature
    (a double backward through attention) runs on the math kernel of scaled_dot_product_attention."""
    import numpy as np

    from talkgen.models.hf import load_hf_subject

    make_vit(tmp_path / "vit")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (36, 3, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "images.npz", x=pixels, y=np.arange(36) % 3)
    s = load_hf_subject(tmp_path / "vit", tmp_path / "images.npz", "vit")
    assert s.task == "image-classifier" and s.data.classes == ("cat", "dog", "bird")
    seen = torch.cat([s.data.x_train, s.data.x_test])
    assert float(seen.min()) >= -1.0 and float(seen.max()) <= 1.0 and float(seen.min()) < -0.9  # (p / 255 - .5) / .5
    assert "rescaled and normalised" in s.data.source and s.model(s.data.x_test[:2]).shape == (2, 3)
    from talkgen.analyses.base import Context, get_analysis

    small = {"saliency": {"n_inputs": 2, "deletion_inputs": 4, "smooth_samples": 2, "ig_steps": 4, "ig_max_steps": 8,
                          "random_orders": 2, "curve_steps": 4},
             "curvature": {"lanczos_iterations": 4, "lanczos_max_iterations": 6, "batch": 16, "top_k": 2}}
    WANT = {"saliency": {"ig_completeness_gap", "deletion_auc.integrated_gradients", "deletion_auc_random"},
            "curvature": {"top_eigenvalue", "trace"}}
    for name, params in small.items():
        a = get_analysis(name)
        assert a.applies_to(s) is True
        r = a.run(Context(subject=s, params=a.resolve_params("quick", params), seed=0, device=torch.device("cpu"),
                          profile="quick"))
        assert r.figures and all(np.isfinite(v.value) for k, v in r.summaries.items() if k in WANT[name]), name
        assert WANT[name] <= set(r.summaries), (name, sorted(r.summaries)[:20])
    from talkgen.build import build
    from talkgen.config import SubjectConfig, TalkConfig

    out = tmp_path / "out"  # the directory as a subject of a build, as `talkgen audit DIR --data images.npz` makes it
    report = build(TalkConfig(subjects=(SubjectConfig(name="vit", model=str(tmp_path / "vit"),
                                                      data=str(tmp_path / "images.npz")),),
                              only=("model-card", "weights"), formats=("report",)), out)
    assert report.exit_code == 0
    status = {a: v["status"] for a, v in json.loads((out / "summary.json").read_text())["subjects"]["vit"]
              ["analyses"].items()}
    assert status["model-card"] == status["weights"] == "ok", status
    np.savez(tmp_path / "wrong.npz", x=pixels[:, :, :4, :4], y=np.arange(36) % 3)
    from talkgen.errors import TalkgenError

    with pytest.raises(TalkgenError, match=r"images shaped \(36, 3, 4, 4\); ViTForImageClassification takes "
                                           r"\(N, 3, 8, 8\)"):
        load_hf_subject(tmp_path / "vit", tmp_path / "wrong.npz", "vit")

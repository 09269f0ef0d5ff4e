"""Hugging Face transformers models as subjects (the optional ``hf`` extra).

A local model directory (``config.json``, ``model.safetensors``, tokenizer files) loads as a
token model: ``(B, T)`` token ids -> logits, with the attention mask derived from the padding
token. A ``*ForSequenceClassification`` model is a ``text-classifier`` (``(B, classes)``);
``*ForMaskedLM`` and ``*ForCausalLM`` are ``sequence-model``s (``(B, T, vocab)``); a base model (``BertModel``,
``RobertaModel``, ... loaded with ``AutoModel``) is a ``text-encoder``: ``(B, T)`` -> the sentence embedding
``(B, hidden)``, mean-pooled or its first token as its pooling config says. A ``*ForImageClassification``
model (ViT, DeiT, ConvNeXt, ...) is an ``image-classifier`` on the images of an ``.npz`` (``x`` (N, C, H, W),
labels ``y``), raw pixels preprocessed as its ``preprocessor_config.json`` says. Nothing is
downloaded (``local_files_only``) and only safetensors weights are accepted, never pickles.

Data is a text file with one sentence per line; a line ``label<TAB>sentence`` carries its label
(a class name from the config's ``id2label`` or an index). Without labels the model's own
predictions stand in, and the subject is marked unlabelled so that nothing reports accuracy
against them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from talkgen.errors import TalkgenError
from talkgen.subject import Subject, SubjectData

MAX_SENTENCES = 2000


def is_hf_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


class HFTokenModel(nn.Module):
    """A transformers model behind the talkgen token-model interface: token ids in, logits out."""

    def __init__(self, hf: nn.Module, pad_id: int | None) -> None:
        super().__init__()
        self.hf = hf
        self.pad_id = pad_id

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != self.pad_id).long() if self.pad_id is not None else None
        return self.hf(input_ids=tokens, attention_mask=mask).logits


def _transformers():
    try:
        import transformers
    except ImportError:
        raise TalkgenError("Hugging Face models need the hf extra: pip install 'talkgen[hf]'") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


class HFEncoder(nn.Module):
    """A transformers base model (``AutoModel``: BERT, RoBERTa, DistilBERT, MPNet, ...) as a sentence encoder:
    token ids in, the sentence embedding out: the mean of the last hidden states over the real tokens, or the
    first token's state where the model's pooling says so (sentence-transformers' ``1_Pooling/config.json``)."""

    def __init__(self, hf: nn.Module, pad_id: int | None, pooling: str = "mean") -> None:
        super().__init__()
        self.hf = hf
        self.pad_id = pad_id
        self.pooling = pooling

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != self.pad_id) if self.pad_id is not None else torch.ones_like(tokens, dtype=torch.bool)
        h = self.hf(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def encoder_pooling(d: Path) -> str:
    """How a sentence-transformers directory pools its tokens ("cls" or "mean"; "mean" when it does not say)."""
    import json

    for cfg in (d / "1_Pooling" / "config.json", d.parent / "1_Pooling" / "config.json"):
        try:
            pooling = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if pooling.get("pooling_mode_cls_token") and not pooling.get("pooling_mode_mean_tokens"):
            return "cls"
        return "mean"
    return "mean"


ENCODERS = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "albert", "electra", "deberta", "deberta-v2",
            "camembert", "modernbert")


def _read_sentences(path: Path, id2label: dict[int, str]) -> tuple[list[str], list[int] | None]:
    if not path.is_file():
        raise TalkgenError(f"data file not found: {path}")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise TalkgenError(f"{path}: not UTF-8 text (one sentence per line)") from None
    if not lines:
        raise TalkgenError(f"{path}: no sentences (one sentence per line)")
    lines = lines[:MAX_SENTENCES]
    if not id2label and all("\t" in ln for ln in lines):  # an encoder's labels: whatever names the file uses
        id2label.update(enumerate(sorted({ln.split("\t", 1)[0].strip() for ln in lines})))
    names = {v: k for k, v in id2label.items()}
    if all("\t" in ln for ln in lines):
        labels = []
        for i, ln in enumerate(lines):
            lab = ln.split("\t", 1)[0].strip()
            if lab in names:
                labels.append(names[lab])
            elif lab.isdigit() and int(lab) in id2label:
                labels.append(int(lab))
            else:
                raise TalkgenError(f"{path}:{i + 1}: unknown label {lab!r}; labels: {', '.join(id2label.values())}")
        return [ln.split("\t", 1)[1] for ln in lines], labels
    return lines, None


class HFImageModel(nn.Module):
    """A transformers image classifier (``*ForImageClassification``: ViT, DeiT, BEiT, ConvNeXt, Swin, ...) behind
    the talkgen image-classifier interface: pixel values ``(B, C, H, W)`` in, logits out."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=pixels).logits


def _preprocess(d: Path, xs: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], str]:
    """Raw pixels (no negative value: 0..255 or 0..1) through the rescale and normalisation steps of the model's
    ``preprocessor_config.json``; values that are already normalised (some negative) are taken as they are. One
    decision for all of ``xs`` (the training and test splits of one file), from the config read once."""
    import json

    try:
        pre = json.loads((d / "preprocessor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return xs, "taken as the model's pixel values (no preprocessor_config.json)"
    if min(float(x.min()) for x in xs) < 0:
        return xs, "taken as the model's pixel values (already normalised: some are negative)"
    steps = []
    if pre.get("do_rescale", True) and max(float(x.max()) for x in xs) > 1.5:
        xs = tuple(x * float(pre.get("rescale_factor", 1 / 255)) for x in xs)
        steps.append("rescaled")
    mean, std = pre.get("image_mean"), pre.get("image_std")
    if pre.get("do_normalize", True) and mean is not None and std is not None:
        shape = (1, -1) + (1,) * (xs[0].ndim - 2)
        xs = tuple((x - torch.tensor(mean, dtype=x.dtype).view(shape)) / torch.tensor(std, dtype=x.dtype).view(shape)
                   for x in xs)
        steps.append("normalised")
    return xs, (" and ".join(steps) + " as preprocessor_config.json says") if steps else "taken as they are"


def _image_subject(d: Path, tf, config, arch: str, data: str | Path | None, name: str) -> Subject:
    from dataclasses import replace

    from talkgen.data.user import load_user_data

    if data is None:
        raise TalkgenError(f"subject {name!r}: --data is required (an .npz of images x (N, C, H, W) and labels y)")
    try:
        hf = tf.AutoModelForImageClassification.from_pretrained(d, local_files_only=True, use_safetensors=True,
                                                                attn_implementation="sdpa")
    except (OSError, ValueError, RuntimeError) as exc:
        raise TalkgenError(f"{d}: cannot load the weights ({' '.join(str(exc).split())[:200]})") from None
    hf.eval()
    sd = load_user_data(str(data))
    channels = int(getattr(config, "num_channels", 3) or 3)
    size = getattr(config, "image_size", None)
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size) if size else None
    x = sd.x_train
    if x.ndim != 4 or x.shape[1] != channels or (size and tuple(x.shape[2:]) != size and arch.startswith("ViT")):
        want = f"(N, {channels}, {size[0]}, {size[1]})" if size else f"(N, {channels}, H, W)"
        shape = (len(sd.x_train) + len(sd.x_test), *x.shape[1:])  # the file's, not the training split's
        raise TalkgenError(f"{data}: images shaped {shape}; {arch} takes {want}")
    (x_train, x_test), how = _preprocess(d, (sd.x_train, sd.x_test))
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    n_labels = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    top = int(max(sd.y_train.max(), sd.y_test.max()))
    if top >= n_labels:
        raise TalkgenError(f"{data}: label {top} is out of range for {arch} with {n_labels} classes")
    numbered = all(c == str(i) for i, c in enumerate(sd.classes))
    classes = tuple(id2label.get(i, str(i)) for i in range(n_labels)) if numbered else sd.classes
    sd = replace(sd, x_train=x_train, x_test=x_test, classes=classes, source=f"{sd.source}; pixel values {how}")
    return Subject(name=name, model=HFImageModel(hf).eval(), task="image-classifier", data=sd,
                   source=f"transformers {arch} from {d}",
                   card={"architecture": arch, "image_size": list(size) if size else None, "pixels": how})


def load_hf_subject(directory: str | Path, data: str | Path | None, name: str) -> Subject:
    """The model in ``directory`` as a Subject, with the sentences (or, for an image classifier, the images) of
    ``data`` as its inputs."""
    d = Path(directory)
    tf = _transformers()
    if not (d / "model.safetensors").is_file() and not list(d.glob("model-*.safetensors")):
        raise TalkgenError(f"{d}: no model.safetensors (only safetensors weights are loaded, never pickles)")
    try:
        config = tf.AutoConfig.from_pretrained(d, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TalkgenError(f"{d}: cannot load the config ({' '.join(str(exc).split())[:200]})") from None
    arch = (config.architectures or [""])[0]
    if arch.endswith("ForImageClassification"):
        return _image_subject(d, tf, config, arch, data, name)
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(d, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TalkgenError(f"{d}: cannot load the config or tokenizer ({' '.join(str(exc).split())[:200]})") from None
    if arch.endswith("ForSequenceClassification"):
        auto, task = tf.AutoModelForSequenceClassification, "text-classifier"
    elif arch.endswith("ForMaskedLM"):
        auto, task = tf.AutoModelForMaskedLM, "sequence-model"
    elif arch.endswith(("ForCausalLM", "LMHeadModel")):  # GPT2LMHeadModel is a causal language model
        auto, task = tf.AutoModelForCausalLM, "sequence-model"
    elif getattr(config, "model_type", "") in ENCODERS and (arch.endswith("Model") or not arch):
        auto, task = tf.AutoModel, "text-encoder"  # a base model: its sentence embedding is what it gives
    else:
        raise TalkgenError(f"{d}: architecture {arch or '(none)'} is not supported; talkgen reads encoder base "
                           f"models ({', '.join(ENCODERS[:4])}, ...: *Model, as sentence encoders), "
                           f"*ForSequenceClassification, *ForMaskedLM, *ForCausalLM, *LMHeadModel and "
                           f"*ForImageClassification models")
    try:
        hf = auto.from_pretrained(d, local_files_only=True, use_safetensors=True, attn_implementation="sdpa")
    except (OSError, ValueError, RuntimeError) as exc:
        raise TalkgenError(f"{d}: cannot load the weights ({' '.join(str(exc).split())[:200]})") from None
    hf.eval()
    if data is None:
        raise TalkgenError(f"subject {name!r}: --data is required (a text file, one sentence per line)")
    # a base model's config carries placeholder labels (LABEL_0, LABEL_1) that name nothing: an encoder's labels
    # are whatever names its data file uses
    id2label = {} if task == "text-encoder" else {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    sentences, labels = _read_sentences(Path(data), id2label)
    limit = min(getattr(config, "max_position_embeddings", 512) or 512, 128)
    enc = tokenizer(sentences, padding=True, truncation=True, max_length=limit, return_tensors="pt")
    tokens = enc["input_ids"]
    pad = tokenizer.pad_token_id
    if task == "text-encoder":
        pooling = encoder_pooling(d)
        model: nn.Module = HFEncoder(hf, pad, pooling).eval()
        classes = tuple(id2label[i] for i in sorted(id2label)) if labels is not None else ("(no labels)",)
        y = torch.tensor(labels) if labels is not None else torch.zeros(len(tokens), dtype=torch.long)
        source = (f"{len(sentences)} sentences from {Path(data).name}"
                  + ("" if labels is not None else "; no labels given"))
        sd = SubjectData(tokens, y, tokens, y, classes, source, labelled=labels is not None)
        return Subject(name=name, model=model, task=task, data=sd, source=f"transformers {arch or config.model_type} "
                       f"from {d}", card={"architecture": arch or config.model_type, "pooling": pooling,
                                           "tokenizer": type(tokenizer).__name__, "pad_token_id": pad,
                                           "embedding_size": int(getattr(config, "hidden_size", 0) or 0)},
                       token_names=tokenizer.convert_ids_to_tokens)
    model = HFTokenModel(hf, pad).eval()
    with torch.no_grad():
        width = model(tokens[:1]).shape[-1]  # classes, or the vocabulary of a language model
    if task == "text-classifier":
        classes = tuple(id2label.get(i, str(i)) for i in range(width))
        if labels is not None:
            y = torch.tensor(labels)
        else:  # the model's own answers stand in, one batch at a time (never every sentence's logits at once)
            with torch.no_grad():
                y = torch.cat([model(tokens[i:i + 64]).argmax(-1) for i in range(0, len(tokens), 64)])
    else:
        vocab = tokenizer.get_vocab()
        inv = {i: t for t, i in vocab.items()}
        classes = tuple(inv.get(i, f"<{i}>") for i in range(width))
        y = torch.cat([tokens[:, 1:], torch.full((len(tokens), 1), pad if pad is not None else 0)], 1)
        labels = labels or []  # next tokens are real labels for a language model
    labelled = labels is not None
    source = (f"{len(sentences)} sentences from {Path(data).name}"
              + ("" if labelled else "; no labels given: the model's own predictions stand in"))
    sd = SubjectData(tokens, y, tokens, y, classes, source, labelled=labelled)
    return Subject(name=name, model=model, task=task, data=sd, source=f"transformers {arch} from {d}",
                   card={"architecture": arch, "tokenizer": type(tokenizer).__name__, "pad_token_id": pad},
                   token_names=tokenizer.convert_ids_to_tokens)

"""Meet the model: size, data, and how well it does its job, measured on held-out data.

What it measures. Classifiers: parameter count; train and test accuracy, with a 95% Wilson
score interval for the test accuracy (Wilson 1927); per-class test accuracy; the test
confusion matrix. Sequence models and character language models: next-token accuracy and
cross-entropy in bits per token on the test sequences, and both per position in the sequence
(how much the model gains from context). Assumptions: a classifier's output is (B, classes);
a sequence model's output is (B, T, vocab) logits for the next token.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from talkgen.analyses import budget
from talkgen.analyses.base import Analysis, Context, Result, Scalar, register
from talkgen.analyses.loss import predicted_classes
from talkgen.models.introspect import parameter_count
from talkgen.specs import Bars, Curves, Heatmaps, Table
from talkgen.stats import CI_LEVEL, bootstrap_estimate, proportion


def _estimate(e: Scalar) -> str:
    """A proportion for the card's table: '0.9822 (95% interval 0.9653 to 0.9910; n = 450)'."""
    if e.n is None or not e.n:
        return "n/a"
    return f"{e.value:.4f} ({CI_LEVEL:.0%} interval {e.lo:.4f} to {e.hi:.4f}; n = {e.n:,})"


@register
class ModelCard(Analysis):
    name = "model-card"
    order = 0
    runs_on_twins = ("initial",)
    title = "Meet the model"
    section = "title"
    version = 4  # 2: accuracies carry their n and 95% interval; 3: sentence encoders get a card of their own;
    # 4: at most max_inputs examples of each split (a seeded random subset, said so), and the work declared
    applies_text = "classifiers, sequence models, character language models and sentence encoders"
    params = {"batch_size": 512, "max_sequences": 2000, "max_inputs": 50000}
    quick = {"max_sequences": 200, "max_inputs": 10000}
    param_bounds = {"max_inputs": (100, None), "max_sequences": (10, None)}

    # a forward pass per example read: both splits of a classifier (capped), the sequences of a sequence model or
    # an encoder; a large model's card reads fewer
    sample_order = (("max_inputs", 500), ("max_sequences", 50))

    def passes(self, subject, params) -> float:
        from talkgen.analyses.budget import example_size

        if subject.task in ("char-lm", "sequence-model", "text-encoder"):
            return min(len(subject.data.x_test), params["max_sequences"]) * example_size(subject)
        splits = (subject.data.x_test,) + ((subject.data.x_train,) if subject.data.labelled else ())
        return sum(min(len(x), params["max_inputs"]) for x in splits) * example_size(subject)

    @staticmethod
    def _subset(x: torch.Tensor, y: torch.Tensor, most: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """At most ``most`` rows of (x, y): all of them, or a seeded random subset in their order (True)."""
        if len(x) <= most:
            return x, y, False
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:most].sort().values
        return x[keep], y[keep], True

    def run(self, ctx: Context) -> Result:
        s = ctx.subject
        bs = budget.pass_rows(s, ctx.params["batch_size"])  # a large model: what its pass budget holds
        if s.task in ("char-lm", "sequence-model"):
            return self._sequence(ctx)
        if s.task == "text-encoder":
            return self._encoder(ctx)
        if not s.data.labelled:
            return self._unlabelled(ctx)
        classes = s.data.classes
        k = len(classes)
        most = ctx.params["max_inputs"]
        x_test, y, cut_test = self._subset(s.data.x_test, s.data.y_test, most, ctx.seed)
        x_train, y_train, cut_train = self._subset(s.data.x_train, s.data.y_train, most, ctx.seed + 1)
        test_pred = predicted_classes(s.model, x_test, bs)  # on the build's device: the runner placed the model
        ctx.progress(len(x_test), len(x_test) + len(x_train), "examples")
        train_pred = predicted_classes(s.model, x_train, bs)
        correct = int((test_pred == y).sum())
        n = len(y)
        sampled = [f"{split}: a random {most:,} of {len(full):,} examples"
                   for split, full, cut in (("test", s.data.x_test, cut_test), ("train", s.data.x_train, cut_train))
                   if cut]
        test_accuracy = proportion(correct, n, "accuracy on the held-out test set")
        confusion = np.zeros((k, k), dtype=np.float64)  # (true, predicted)
        np.add.at(confusion, (y.numpy(), test_pred.clamp(0, k - 1).numpy()), 1)
        per_class = np.divide(np.diag(confusion), confusion.sum(1), out=np.full(k, np.nan),
                              where=confusion.sum(1) > 0)
        n_params = parameter_count(s.model)
        worst = int(np.nanargmin(per_class)) if k else 0
        summaries = {
            "parameters": Scalar(float(n_params), "count", "trainable and frozen parameters (tied counted once)"),
            "test_accuracy": test_accuracy,
            "train_accuracy": proportion(int((train_pred == y_train).sum()), len(train_pred),
                                         "accuracy on the training set"),
            "worst_class_accuracy": proportion(confusion[worst, worst], int(confusion[worst].sum()),
                                               "test accuracy of the hardest class") if k else
            Scalar(math.nan, "fraction", "test accuracy of the hardest class"),
        }
        rows = (("parameters", f"{n_params:,}"), ("task", s.task), ("source", s.source),
                ("data", s.data.source), ("classes", ", ".join(classes)),
                ("train / test examples", f"{len(s.data.x_train):,} / {len(s.data.x_test):,}"
                 + (f" ({len(x_train):,} / {n:,} read)" if sampled else "")),
                ("test accuracy", _estimate(summaries["test_accuracy"])),
                ("train accuracy", _estimate(summaries["train_accuracy"])))
        return Result(
            analysis=self.name, subject=s.name,
            arrays={"confusion": confusion, "per_class": per_class},
            summaries=summaries,
            figures=(
                Bars(id="per-class", title="Test accuracy per class",
                     caption="Fraction of each class's test examples that the model gets right.",
                     alt=f"Bar chart of test accuracy for each of the {k} classes; lowest is class "
                         f"{classes[worst] if k else ''}.",
                     categories=tuple(classes), values=("per_class",), series=("test accuracy",),
                     ylabel="accuracy (fraction)"),
                Heatmaps(id="confusion", title="Where the model confuses classes",
                         caption="Test confusion matrix: rows are the true class, columns the predicted class.",
                         alt="Confusion matrix heatmap; a bright diagonal means mostly correct predictions.",
                         arrays=("confusion",), panel_titles=("test confusion counts",),
                         xlabel="predicted class index", ylabel="true class index",
                         colorbar="test examples", signed=False),
            ),
            tables=(Table(id="card", title="Model card", columns=("item", "value"), rows=rows),),
            data={"classes": list(classes), "worst_class": classes[worst] if k else "",
                  "n_test": n, "correct": correct, **({"sampled": "; ".join(sampled)} if sampled else {})},
        )

    def _encoder(self, ctx: Context) -> Result:
        """A sentence encoder: its embeddings of the given sentences, how alike they all are (the mean cosine
        similarity of distinct pairs: a high one means the embeddings crowd into a narrow cone), and with labels,
        how often a sentence's nearest other sentence carries its label (leave-one-out 1-NN by cosine)."""
        s = ctx.subject
        n = min(len(s.data.x_test), ctx.params["max_sequences"])
        x = s.data.x_test[:n]
        step = budget.pass_rows(s, 64)
        with torch.no_grad():
            emb = torch.cat([s.model(x[i:i + step]).float() for i in range(0, n, step)])
        unit = torch.nn.functional.normalize(emb, dim=-1)
        cos = (unit @ unit.T).numpy()
        off = cos[~np.eye(n, dtype=bool)]
        n_params = parameter_count(s.model)
        pooling = s.card.get("pooling", "mean") if isinstance(s.card, dict) else "mean"
        summaries = {
            "parameters": Scalar(float(n_params), "count", "parameters (tied counted once)"),
            "embedding_size": Scalar(float(emb.shape[1]), "dimensions", "size of the sentence embedding"),
            "mean_cosine_similarity": Scalar(float(off.mean()) if off.size else math.nan, "cosine",
                                             f"mean cosine similarity of the {n * (n - 1) // 2} distinct pairs of "
                                             f"sentence embeddings"),
        }
        rows = [("parameters", f"{n_params:,}"), ("task", s.task), ("source", s.source), ("data", s.data.source),
                ("sentence embedding", f"{emb.shape[1]} dimensions, {pooling} of the last hidden states"),
                ("sentences", f"{n:,}")]
        data: dict = {"n_inputs": n, "pooling": pooling, "encoder": True, "classes": list(s.data.classes)}
        if s.data.labelled and n > 1:
            y = s.data.y_test[:n].numpy()
            nearest = np.where(np.eye(n, dtype=bool), -np.inf, cos).argmax(1)
            hits = int((y[nearest] == y).sum())
            summaries["neighbour_label_accuracy"] = proportion(hits, n, "sentences whose most similar other "
                                                                        "sentence carries the same label")
            counts = np.bincount(y)
            summaries["commonest_label_share"] = Scalar(float(counts.max() / n), "fraction",
                                                        "share of the commonest label (what always guessing it gets)")
            rows.append(("nearest-neighbour label accuracy", _estimate(summaries["neighbour_label_accuracy"])))
        else:
            rows.append(("accuracy", "not measured: no labels were given"))
        shown = min(n, 40)
        return Result(
            analysis=self.name, subject=s.name, arrays={"cosine": cos[:shown, :shown]}, summaries=summaries,
            figures=(Heatmaps(id="similarity", title="How alike the sentence embeddings are",
                              caption=f"Cosine similarity of the embeddings of the first {shown} of the {n} "
                                      f"sentences ({pooling} pooling); the diagonal is each sentence with itself.",
                              alt=f"A {shown} by {shown} matrix of cosine similarities between sentence embeddings.",
                              arrays=("cosine",), panel_titles=("cosine similarity",), xlabel="sentence",
                              ylabel="sentence", colorbar="cosine similarity", signed=True),),
            tables=(Table(id="card", title="Model card", columns=("item", "value"), rows=tuple(rows)),),
            data=data)

    def _unlabelled(self, ctx: Context) -> Result:
        """No ground truth: what the model predicts, and nothing that pretends to be accuracy."""
        s = ctx.subject
        classes = s.data.classes
        x, _, cut = self._subset(s.data.x_test, s.data.y_test, ctx.params["max_inputs"], ctx.seed)
        pred = predicted_classes(s.model, x, budget.pass_rows(s, ctx.params["batch_size"]))
        share = np.bincount(pred.clamp(0, len(classes) - 1).numpy(), minlength=len(classes)) / max(1, len(pred))
        n_params = parameter_count(s.model)
        top = int(np.argmax(share))
        rows = (("parameters", f"{n_params:,}"), ("task", s.task), ("source", s.source), ("data", s.data.source),
                ("classes", ", ".join(classes)), ("inputs", f"{len(pred):,}"),
                ("accuracy", "not measured: no labels were given"))
        return Result(
            analysis=self.name, subject=s.name, arrays={"share": share},
            summaries={"parameters": Scalar(float(n_params), "count", "parameters (tied counted once)"),
                       "top_class_share": Scalar(float(share[top]), "fraction",
                                                 f"share of inputs predicted as the most common class ({classes[top]})")},
            figures=(Bars(id="predicted", title="What the model predicts",
                          caption=f"Share of the {len(pred)} given inputs predicted as each class (no labels were "
                                  f"given, so no accuracy is reported).",
                          alt="Bar chart of the share of inputs predicted as each class.",
                          categories=tuple(classes), values=("share",), series=("predicted share",),
                          ylabel="share of inputs"),),
            tables=(Table(id="card", title="Model card", columns=("item", "value"), rows=rows),),
            data={"classes": list(classes), "n_inputs": len(pred), "top_class": classes[top], "unlabelled": True,
                  **({"sampled": f"a random {len(x):,} of {len(s.data.x_test):,} inputs"} if cut else {})})

    def _sequence(self, ctx: Context) -> Result:
        s = ctx.subject
        n = min(len(s.data.x_test), ctx.params["max_sequences"])
        x, y = s.data.x_test[:n], s.data.y_test[:n]  # (N, T) inputs and next-token targets
        losses, hits = [], []
        # sequences per forward pass: up to 64, fewer where the logits (b, T, vocabulary) would pass 2^25 values
        # (GPT-2's 50,257 tokens at 61 positions: 10 sequences, 120 MB of logits instead of 780 MB, and as much
        # again for the cross-entropy's log-softmax)
        step = max(1, min(64, 2**25 // max(1, x.shape[1] * len(s.data.classes))))
        step = budget.pass_rows(s, step)  # a large model: within its pass budget too
        with torch.no_grad():
            for i in range(0, n, step):
                logits = s.model(x[i:i + step])  # (b, T, V)
                losses.append(torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2), y[i:i + step], reduction="none") / math.log(2))  # (b, T) bits
                hits.append((logits.argmax(-1) == y[i:i + step]).float())
                del logits
        bits = torch.cat(losses).numpy()  # (N, T)
        acc = torch.cat(hits).numpy()
        per_pos_bits, per_pos_acc = bits.mean(0), acc.mean(0)
        position = np.arange(1, bits.shape[1] + 1, dtype=np.float64)
        unit = "character" if s.task == "char-lm" else "token"
        n_params = parameter_count(s.model)
        summaries = {
            "parameters": Scalar(float(n_params), "count", "parameters (tied counted once)"),
            "test_bits_per_token": Scalar(float(bits.mean()), f"bits/{unit}",
                                          f"cross-entropy of the next {unit} on held-out sequences"),
            # sequences are the independent items (the tokens of one sequence are not): bootstrap over them
            "test_next_token_accuracy": bootstrap_estimate(np.mean, acc.mean(1), unit="fraction", seed=ctx.seed,
                                                           meaning=f"share of next {unit}s predicted exactly, "
                                                                   f"over {n} held-out sequences"),
            "chance_accuracy": Scalar(1.0 / len(s.data.classes), "fraction", "one over the vocabulary size"),
        }
        rows = (("parameters", f"{n_params:,}"), ("task", s.task), ("source", s.source), ("data", s.data.source),
                ("vocabulary", f"{len(s.data.classes)} {unit}s"),
                ("test sequences used", f"{n:,} of {len(s.data.x_test):,}, length {bits.shape[1]}"),
                (f"bits per {unit}", f"{bits.mean():.4f}"),
                ("next-token accuracy", _estimate(summaries["test_next_token_accuracy"]) + " over sequences"))
        return Result(
            analysis=self.name, subject=s.name,
            arrays={"position": position, "bits": per_pos_bits, "accuracy": per_pos_acc},
            summaries=summaries,
            figures=(
                Curves(id="by-position", title=f"How well the next {unit} is predicted, by position",
                       caption=f"Mean next-{unit} accuracy at each position of the held-out sequences "
                               f"({n} sequences).",
                       alt=f"Line plot of next-{unit} accuracy against position in the sequence.",
                       x=("position",), y=("accuracy",), labels=("accuracy",),
                       xlabel="position in sequence", ylabel="next-token accuracy (fraction)"),
                Curves(id="bits-by-position", title=f"Bits per {unit}, by position",
                       caption=f"Mean cross-entropy (bits) of the next {unit} at each position: "
                               "lower means the context helps more.",
                       alt=f"Line plot of bits per {unit} against position in the sequence.",
                       x=("position",), y=("bits",), labels=("bits",),
                       xlabel="position in sequence", ylabel=f"bits per {unit}"),
            ),
            tables=(Table(id="card", title="Model card", columns=("item", "value"), rows=rows),),
            data={"unit": unit, "n_sequences": n, "length": int(bits.shape[1]),
                  "vocabulary": len(s.data.classes),
                  "early_bits": float(per_pos_bits[: max(1, len(per_pos_bits) // 10)].mean()),
                  "late_bits": float(per_pos_bits[-max(1, len(per_pos_bits) // 10):].mean())},
        )

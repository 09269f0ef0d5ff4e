"""Meet the model: size, classes, measured accuracy with a confidence interval, confusions.

What it measures: parameter count; train and test accuracy on the subject's data, with a
95% Wilson score interval for the test accuracy (Wilson 1927); per-class test accuracy;
the test confusion matrix. Assumptions: a classifier whose output's argmax over dim 1 is
the predicted class.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from talkgen.analyses.base import Analysis, Context, Result, Scalar, register
from talkgen.analyses.specs import Bars, Heatmaps, Table


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def predict(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch].to(device)).argmax(1).cpu() for i in range(0, len(x), batch)])


@register
class ModelCard(Analysis):
    name = "model-card"
    title = "Meet the model"
    section = "title"
    version = 1
    applies_text = "classifiers (image or tabular)"
    params = {"batch_size": 512}

    def applies_to(self, subject) -> bool | str:
        if not subject.task.endswith("classifier"):
            return f"needs a classifier; {subject.name} is a {subject.task}"
        return True

    def run(self, ctx: Context) -> Result:
        s, dev, bs = ctx.subject, ctx.device, ctx.params["batch_size"]
        if dev.type != "cpu":
            raise RuntimeError("model-card runs on the CPU copy of the model; use --device cpu")
        classes = s.data.classes
        k = len(classes)
        test_pred = predict(s.model, s.data.x_test, dev, bs)
        train_pred = predict(s.model, s.data.x_train, dev, bs)
        y = s.data.y_test
        correct = int((test_pred == y).sum())
        n = len(y)
        lo, hi = wilson_interval(correct, n)
        confusion = np.zeros((k, k), dtype=np.float64)  # (true, predicted)
        np.add.at(confusion, (y.numpy(), test_pred.clamp(0, k - 1).numpy()), 1)
        per_class = np.divide(np.diag(confusion), confusion.sum(1), out=np.full(k, np.nan),
                              where=confusion.sum(1) > 0)
        n_params = sum(p.numel() for p in {id(p): p for p in s.model.parameters()}.values())
        train_acc = float((train_pred == s.data.y_train).float().mean()) if len(train_pred) else math.nan
        summaries = {
            "parameters": Scalar(float(n_params), "count", "trainable and frozen parameters (tied counted once)"),
            "test_accuracy": Scalar(correct / n if n else math.nan, "fraction", "accuracy on the held-out test set"),
            "test_accuracy_ci_low": Scalar(lo, "fraction", "95% Wilson interval, lower end"),
            "test_accuracy_ci_high": Scalar(hi, "fraction", "95% Wilson interval, upper end"),
            "train_accuracy": Scalar(train_acc, "fraction", "accuracy on the training set"),
            "worst_class_accuracy": Scalar(float(np.nanmin(per_class)) if k else math.nan, "fraction",
                                           "test accuracy of the hardest class"),
        }
        worst = int(np.nanargmin(per_class)) if k else 0
        rows = (("parameters", f"{n_params:,}"), ("task", s.task), ("source", s.source),
                ("data", s.data.source), ("classes", ", ".join(classes)),
                ("train / test examples", f"{len(s.data.x_train):,} / {n:,}"),
                ("test accuracy (95% CI)", f"{correct / n:.4f} ({lo:.4f} to {hi:.4f})" if n else "n/a"),
                ("train accuracy", f"{train_acc:.4f}"))
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
                  "n_test": n, "correct": correct},
        )

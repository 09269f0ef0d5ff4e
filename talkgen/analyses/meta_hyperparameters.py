"""Reading the training recipe from the weights (Eilertsen et al. 2020): optimiser, label-noise level
and training-set fraction, as classes, against chance; and what the weights say about the
subject's own recipe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from talkgen.analyses._zoo import ZOO_PARAMS, ZOO_QUICK, ZooAnalysis, load_zoo, subject_params, usable_members
from talkgen.analyses.base import Context, Result, Scalar, register
from talkgen.specs import Bars, Table
from talkgen.stats import CI_LEVEL, proportion


HYPER_TARGETS = {
    "optimizer": ("SGD + momentum", "Adam"),
    "label noise": ("none", "up to 20%", "over 20%"),
    "training fraction": ("under 15%", "15-45%", "over 45%"),
}


def hyper_classes(r: dict[str, Any]) -> dict[str, int]:
    """A member's (or a recipe's) class for each target of ``HYPER_TARGETS``."""
    noise, frac = r["label_noise"], r["train_fraction"]
    return {"optimizer": int(str(r["optimizer"]).lower() == "adam"),
            "label noise": 0 if noise == 0 else (1 if noise <= 0.2 else 2),
            "training fraction": 0 if frac < 0.15 else (1 if frac < 0.45 else 2)}


def card_recipe(subject) -> dict[str, Any] | None:
    """The subject's recipe in zoo terms, from its card, when it has one."""
    rec = dict(subject.card.get("recipe", {})) if subject.card else {}
    if "optimizer" not in rec:
        return None
    return {"optimizer": rec["optimizer"], "label_noise": float(rec.get("label_noise", 0.0)),
            "train_fraction": float(rec.get("train_fraction", 1.0))}


@register
class MetaHyperparameters(ZooAnalysis):
    name = "meta-hyperparameters"
    order = 50
    title = "Reading the training recipe from the weights"
    version = 4  # 2: the held-out count is a summary; 3: each accuracy's 95% Wilson interval; 4: in the accuracy's Scalar
    deps = ("model-zoo",)
    params = ZOO_PARAMS
    quick = ZOO_QUICK

    def run(self, ctx: Context) -> Result:
        from talkgen.meta import metanets as mn

        zoo = load_zoo(ctx)
        _, recs, params = usable_members(zoo)
        tr, te = mn.split_indices(len(recs), ctx.seed)
        X, _ = mn.weight_statistics(params)
        xs, _ = mn.weight_statistics(subject_params(ctx.subject))
        truth = card_recipe(ctx.subject)
        truth_cls = hyper_classes(truth) if truth else None
        rows, acc, chance, subject_rows = [], [], [], []
        summaries = {}
        per_target = {}
        for target, names in HYPER_TARGETS.items():
            y = np.array([hyper_classes(r)[target] for r in recs])
            clf = mn.gbm_classifier(ctx.seed).fit(X[tr], y[tr])
            a = float((clf.predict(X[te]) == y[te]).mean())
            majority = int(np.bincount(y[tr], minlength=len(names)).argmax())
            c = float((y[te] == majority).mean())
            acc.append(a)
            chance.append(c)
            proba = clf.predict_proba(xs)[0]
            k = int(clf.classes_[int(np.argmax(proba))])
            said = names[k]
            right = None if truth_cls is None else (k == truth_cls[target])
            per_target[target] = {"accuracy": a, "chance": c, "subject": said, "confidence": float(proba.max()),
                                  "truth": None if truth_cls is None else names[truth_cls[target]], "right": right}
            est = proportion(round(a * len(te)), len(te), "")
            rows.append((target, ", ".join(names), f"{a:.3f} ({est.lo:.3f} to {est.hi:.3f})", f"{c:.3f}",
                         f"{a - c:+.3f}"))
            subject_rows.append((target, said, f"{proba.max():.2f}",
                                 "not known" if truth_cls is None else names[truth_cls[target]]))
            key = target.replace(" ", "_")
            summaries[f"accuracy.{key}"] = proportion(round(a * len(te)), len(te),
                                                      f"{target} read from weights, held-out members", unit="accuracy")
            summaries[f"chance.{key}"] = Scalar(c, "accuracy", f"{target}: always guessing the commonest class")
        summaries["mean_gain_over_chance"] = Scalar(float(np.mean(np.array(acc) - np.array(chance))), "accuracy",
                                                    "mean accuracy above chance over the three recipe targets")
        summaries["n_test"] = Scalar(float(len(te)), "members", "held-out zoo members the answers are scored on")
        arrays = {"accuracy": np.array(acc), "chance": np.array(chance)}
        fig = Bars(id="hyper", title="What the weights say about how they were trained",
                   caption=f"Gradient-boosted trees on weight statistics, trained on {len(tr)} zoo members, scored on "
                           f"{len(te)} held out; chance: always the commonest class of the training members.",
                   alt="Grouped bars: classification accuracy against chance for optimiser, label noise and "
                       "training-set fraction.",
                   categories=tuple(HYPER_TARGETS), values=("accuracy", "chance"), series=("from weights", "chance"),
                   ylabel="held-out accuracy")
        return Result(
            analysis=self.name, subject=ctx.subject.name, arrays=arrays, summaries=summaries, figures=(fig,),
            tables=(Table(id="hyper", title="Recipe from weights: held-out accuracy",
                          columns=("target", "classes", "accuracy", "chance", "gain"), rows=tuple(rows),
                          caption=f"Accuracy with its {CI_LEVEL:.0%} Wilson interval on n = {len(te)} held-out "
                                  "members; chance: always the commonest class of the training members."),
                    Table(id="subject", title=f"What the weights say about {ctx.subject.name}'s recipe",
                          columns=("target", "read from weights", "confidence", "its card says"),
                          rows=tuple(subject_rows))),
            data={"targets": per_target, "n_train": len(tr), "n_test": len(te), "has_truth": truth is not None})

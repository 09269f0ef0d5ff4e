"""Reading test accuracy from the weights (Unterthiner et al. 2020): weight statistics into
gradient-boosted trees, a permutation-invariant DeepSets network on the raw weights, and two
baselines (the mean; gradient-boosted trees on the training recipe instead of the weights).
Held-out 20% of the zoo: R^2 and Kendall's tau, over all members and over those that trained.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from talkgen.analyses._zoo import (CHANCE_FACTOR, ZOO_PARAMS, ZOO_QUICK, ZooAnalysis, fit_deepsets, load_zoo,
                                   measured_accuracy, subject_params, usable_members)
from talkgen.analyses.base import Check, Context, Finding, Result, Scalar, register
from talkgen.specs import Bars, Scatter, Table


@register
class MetaAccuracy(ZooAnalysis):
    name = "meta-accuracy"
    order = 40
    title = "Reading accuracy from the weights"
    version = 3  # 2: the held-out and training counts are summaries; 3: R² of the weights' 95% interval
    cost_hint = 3
    deps = ("model-zoo",)
    params = ZOO_PARAMS | {"deepsets_epochs": 200}
    quick = ZOO_QUICK | {"deepsets_epochs": 60}

    def checks(self, r: Result) -> tuple[Check, ...]:
        m = r.data["metrics"]
        ok = bool(r.data["weights_beat_recipe"])
        return (Check("accuracy from weights", "against the recipe and the mean (held-out zoo)",
                      f"tau weights {m['weights']['tau']:.2f}, recipe {m['recipe']['tau']:.2f}, "
                      f"DeepSets {m['deepsets']['tau']:.2f}; R^2 {m['weights']['r2']:.2f}",
                      ok, "beats the recipe" if ok else "the recipe ranks better"),)

    LABELS = {"weights": "weight statistics + GBM", "deepsets": "DeepSets on raw weights",
              "recipe": "recipe + GBM (baseline)", "mean": "the mean (baseline)"}
    ORDER = ("weights", "deepsets", "recipe", "mean")

    def run(self, ctx: Context) -> Result:
        m = self._predict(ctx)
        self._subject(m, ctx)
        return self._present(m, ctx)

    def _predict(self, ctx: Context) -> SimpleNamespace:
        """Three predictors of held-out members' test accuracy (weight statistics, DeepSets on raw weights, the
        recipe) and the mean, scored by R^2 and Kendall's tau."""
        from talkgen.meta import metanets as mn

        zoo = load_zoo(ctx)
        _, recs, params = usable_members(zoo)
        acc = np.array([r["test_accuracy"] for r in recs])
        tr, te = mn.split_indices(len(recs), ctx.seed)
        X, _ = mn.weight_statistics(params)
        H = mn.recipe_features(recs)
        preds: dict[str, np.ndarray] = {}
        gbm = mn.accuracy_regressor(ctx.seed).fit(X[tr], acc[tr])
        preds["weights"] = gbm.predict(X[te])
        preds["recipe"] = mn.accuracy_regressor(ctx.seed).fit(H[tr], acc[tr]).predict(H[te])
        net, info = fit_deepsets(zoo, type(self), params, acc, "regression", tr, ctx.params, ctx.seed, "deepsets-accuracy")
        # an accuracy lies in [0, 1]; the network's raw regression output need not
        held_out = {k: v[torch.as_tensor(te)] for k, v in params.items()}
        preds["deepsets"] = np.clip(mn.deepsets_predict(net, held_out), 0, 1)
        preds["mean"] = np.full(len(te), acc[tr].mean())
        y = acc[te]
        chance = 1.0 / len(ctx.subject.data.classes)
        trained = y >= CHANCE_FACTOR * chance
        metrics = {k: {"r2": mn.r2(y, pr), "tau": mn.kendall_tau(y, pr), "r2_trained": mn.r2(y[trained], pr[trained]),
                       "tau_trained": mn.kendall_tau(y[trained], pr[trained]), "mae": float(np.abs(y - pr).mean())}
                   for k, pr in preds.items()}
        return SimpleNamespace(recs=recs, X=X, tr=tr, te=te, gbm=gbm, net=net, info=info, preds=preds, y=y,
                               chance=chance, trained=trained, metrics=metrics)

    @staticmethod
    def _subject(m: SimpleNamespace, ctx: Context) -> None:
        """What the predictors read from this model's weights, against its measured accuracy."""
        from talkgen.meta import metanets as mn

        sp = subject_params(ctx.subject)
        xs, m.stat_names = mn.weight_statistics(sp)
        lo, hi = np.quantile(m.X, 0.01, axis=0), np.quantile(m.X, 0.99, axis=0)
        m.outside = [m.stat_names[j] for j in np.flatnonzero((xs[0] < lo) | (xs[0] > hi))]
        m.subject_pred = {"weights": float(m.gbm.predict(xs)[0]),
                          "deepsets": float(np.clip(mn.deepsets_predict(m.net, sp)[0], 0, 1))}
        m.measured = measured_accuracy(ctx.subject)

    def _present(self, m: SimpleNamespace, ctx: Context) -> Result:
        metrics, label, order = m.metrics, self.LABELS, self.ORDER
        arrays: dict[str, np.ndarray] = {"measured": m.y}
        for k in ("weights", "deepsets", "recipe"):
            arrays[f"pred_{k}"] = m.preds[k]
        arrays["trained"] = m.trained.astype(np.int64)
        arrays["bar_tau"] = np.array([metrics[k]["tau"] for k in order])
        arrays["bar_r2"] = np.array([max(metrics[k]["r2"], -0.5) for k in order])
        arrays["bar_tau_trained"] = np.array([metrics[k]["tau_trained"] for k in order])
        figures = (
            Scatter(id="predicted", title="Predicted against measured accuracy, held-out zoo members",
                    caption=f"{len(m.te)} held-out members ({len(m.tr)} trained the predictors). Colour: whether the "
                            f"member trained (test accuracy at least {CHANCE_FACTOR:g}x chance).",
                    alt="Three scatter plots of predicted against measured test accuracy for weight statistics, "
                        "DeepSets and the recipe baseline.",
                    x=("measured",) * 3, y=("pred_weights", "pred_deepsets", "pred_recipe"), labels=("trained",) * 3,
                    panel_titles=tuple(label[k] for k in ("weights", "deepsets", "recipe")),
                    label_names=("did not train", "trained"), xlabel="measured test accuracy",
                    ylabel="predicted", ticks=True, limits=(0.0, 1.0), legend_title="member",
                    diagonal=True),
            Bars(id="scores", title="How well each predictor ranks and fits",
                 caption="Kendall's tau (rank agreement) over all held-out members and over those that trained; R^2 "
                         "over all (clipped at -0.5). The mean predicts one number: tau 0, R^2 about 0.",
                 alt="Grouped bars of Kendall tau and R squared for four predictors.",
                 categories=tuple(label[k] for k in order), values=("bar_tau", "bar_tau_trained", "bar_r2"),
                 series=("tau, all", "tau, trained", "R^2, all"), ylabel="score"),
        )
        rows = tuple((label[k], f"{metrics[k]['r2']:.3f}", f"{metrics[k]['tau']:.3f}", f"{metrics[k]['r2_trained']:.3f}",
                      f"{metrics[k]['tau_trained']:.3f}", f"{metrics[k]['mae']:.3f}") for k in order)
        summaries = {}
        for k in ("weights", "deepsets", "recipe"):
            summaries[f"r2.{k}"] = Scalar(metrics[k]["r2"], "R^2", f"{label[k]}: R^2 on held-out members")
            summaries[f"tau.{k}"] = Scalar(metrics[k]["tau"], "tau", f"{label[k]}: Kendall tau on held-out members")
            summaries[f"tau_trained.{k}"] = Scalar(metrics[k]["tau_trained"], "tau",
                                                   f"{label[k]}: Kendall tau on held-out members that trained")
        from talkgen.meta import metanets as mn
        from talkgen.stats import CI_LEVEL, bootstrap_interval

        lo, hi = bootstrap_interval(mn.r2, m.y, m.preds["weights"], seed=ctx.seed)
        summaries["r2.weights.lo"] = Scalar(lo, "R^2", f"lower end of the {CI_LEVEL:.0%} bootstrap interval of r2.weights")
        summaries["r2.weights.hi"] = Scalar(hi, "R^2", f"upper end of the {CI_LEVEL:.0%} bootstrap interval of r2.weights")
        summaries["ci.level"] = Scalar(CI_LEVEL, "fraction", "confidence level of the intervals")
        summaries["n_test"] = Scalar(float(len(m.te)), "members", "held-out zoo members the predictors are scored on")
        summaries["n_train"] = Scalar(float(len(m.tr)), "members", "zoo members the predictors are fitted on")
        summaries["weights_r2"] = Scalar(metrics["weights"]["r2"], "R^2", "accuracy from weight statistics: R^2, held out")
        summaries["weights_tau"] = Scalar(metrics["weights"]["tau"], "tau", "accuracy from weight statistics: Kendall tau")
        summaries["predicted_accuracy"] = Scalar(m.subject_pred["weights"], "accuracy",
                                                 "this model's test accuracy as the weight-statistics predictor reads it")
        summaries["measured_accuracy"] = Scalar(m.measured, "accuracy", "this model's measured test accuracy")
        findings = ()
        if abs(m.subject_pred["weights"] - m.measured) > 0.1:
            findings = (Finding("low", "Weights-based accuracy estimate disagrees with the measurement",
                                f"the zoo-trained predictor reads {m.subject_pred['weights']:.3f} from the weights against "
                                f"{m.measured:.3f} measured; {len(m.outside)} of {len(m.stat_names)} weight statistics "
                                f"lie outside the zoo's 1-99% range (the model is unlike the zoo's members)",
                                value=abs(m.subject_pred["weights"] - m.measured), threshold=0.1),)
        return Result(
            analysis=self.name, subject=ctx.subject.name, arrays=arrays, summaries=summaries, figures=figures,
            tables=(Table(id="metrics", title="Accuracy from weights: held-out scores",
                          columns=("predictor", "R^2", "tau", "R^2 (trained)", "tau (trained)", "mean abs. error"),
                          rows=rows),),
            findings=findings,
            data={"metrics": metrics, "labels": label, "n_train": len(m.tr), "n_test": len(m.te),
                  "n_trained_test": int(m.trained.sum()), "subject_pred": m.subject_pred, "measured": m.measured,
                  "weights_beat_recipe": bool(metrics["weights"]["tau"] > metrics["recipe"]["tau"]),
                  "deepsets": m.info, "chance": m.chance, "outside": m.outside, "n_stats": len(m.stat_names),
                  "members": len(m.recs)})

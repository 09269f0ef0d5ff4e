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
    version = 4  # 2: the held-out and training counts are summaries; 3: R² of the weights' 95% interval; 4: every
    # R² and tau with its n and interval, the mean's too, and the weights' gain in tau over the recipe
    cost_hint = 3
    deps = ("model-zoo",)
    params = ZOO_PARAMS | {"deepsets_epochs": 200}
    quick = ZOO_QUICK | {"deepsets_epochs": 60}

    def checks(self, r: Result) -> tuple[Check, ...]:
        """Passed when the weights rank held-out members better than the recipe, the whole interval of the
        difference in tau above zero."""
        from talkgen.stats import with_interval

        x = r.summaries
        if "tau_gain" not in x:  # a result from before version 4
            return ()
        gain = x["tau_gain"]
        ok = gain.lo is not None and gain.lo > 0
        verdict = ("ranks better than the recipe" if ok else "the recipe ranks better"
                   if gain.hi is not None and gain.hi < 0 else "no clearer than the recipe")
        return (Check("accuracy from weights", "against the recipe and the mean (held-out zoo)",
                      f"tau weights {with_interval(x['tau.weights'])}, recipe {with_interval(x['tau.recipe'])}; "
                      f"R² {with_interval(x['r2.weights'])}; n = {gain.n}", ok, verdict),)

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
        from talkgen.meta import metanets as mn
        from talkgen.stats import CI_LEVEL, bootstrap_estimate, kendall_tau_rows, r2_rows, with_interval

        summaries = {}
        for k in ("weights", "deepsets", "recipe", "mean"):
            pred, tr = m.preds[k], m.trained
            summaries[f"r2.{k}"] = bootstrap_estimate(mn.r2, m.y, pred, batched=r2_rows, unit="R²", seed=ctx.seed,
                                                      meaning=f"{label[k]}: R² on held-out members")
            summaries[f"tau.{k}"] = bootstrap_estimate(mn.kendall_tau, m.y, pred, batched=kendall_tau_rows,
                                                       unit="tau", seed=ctx.seed,
                                                       meaning=f"{label[k]}: Kendall tau on held-out members")
            summaries[f"tau_trained.{k}"] = bootstrap_estimate(
                mn.kendall_tau, m.y[tr], pred[tr], batched=kendall_tau_rows, unit="tau", seed=ctx.seed,
                meaning=f"{label[k]}: Kendall tau on held-out members that trained")

        def gain(y, weights, recipe):  # paired: the same resampled members score both predictors
            return mn.kendall_tau(y, weights) - mn.kendall_tau(y, recipe)

        def gain_rows(y, weights, recipe):
            return kendall_tau_rows(y, weights) - kendall_tau_rows(y, recipe)

        summaries["tau_gain"] = bootstrap_estimate(gain, m.y, m.preds["weights"], m.preds["recipe"], batched=gain_rows,
                                                   unit="tau", seed=ctx.seed,
                                                   meaning="Kendall tau from weights minus from the recipe, held out")

        def cell(e: Scalar) -> str:  # the estimate and its interval in a table
            return (f"{e.value:.3g} ({e.lo:.3g} to {e.hi:.3g})" if e.lo is not None and np.isfinite([e.lo, e.hi]).all()
                    else f"{e.value:.3g}")

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
                 caption=f"Kendall's tau (rank agreement) over all {len(m.te)} held-out members and over the "
                         f"{int(m.trained.sum())} that trained; R² over all (clipped at -0.5). The mean predicts one "
                         f"number for every member, so it ranks nothing; its R² is {with_interval(summaries['r2.mean'], '.3g')} "
                         f"(n = {len(m.te)}).",
                 alt="Grouped bars of Kendall tau and R squared for four predictors.",
                 categories=tuple(label[k] for k in order), values=("bar_tau", "bar_tau_trained", "bar_r2"),
                 series=("τ, all", "τ, trained", "R², all"), ylabel="score"),
        )
        summaries["n_test"] = Scalar(float(len(m.te)), "members", "held-out zoo members the predictors are scored on")
        summaries["n_train"] = Scalar(float(len(m.tr)), "members", "zoo members the predictors are fitted on")
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
                          columns=("predictor", "R²", "tau", "tau (trained)", "mean abs. error"),
                          rows=tuple((label[k], cell(summaries[f"r2.{k}"]), cell(summaries[f"tau.{k}"]),
                                      cell(summaries[f"tau_trained.{k}"]), f"{metrics[k]['mae']:.3f}")
                                     for k in order),
                          caption=f"Each with its {CI_LEVEL:.0%} bootstrap interval over the n = {len(m.te)} "
                                  f"held-out members ({int(m.trained.sum())} of them trained)."),),
            findings=findings,
            data={"metrics": metrics, "labels": label, "n_train": len(m.tr), "n_test": len(m.te),
                  "n_trained_test": int(m.trained.sum()), "subject_pred": m.subject_pred, "measured": m.measured,
                  "weights_beat_recipe": bool(summaries["tau_gain"].lo is not None and summaries["tau_gain"].lo > 0),
                  "deepsets": m.info, "chance": m.chance, "outside": m.outside, "n_stats": len(m.stat_names),
                  "members": len(m.recs)})

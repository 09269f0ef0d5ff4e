"""The model zoo: a population of the subject's architecture trained with varied recipes, a share of
them backdoored (``talkgen.meta.zoo``), built once into the build's cache and reused. The
meta-network analyses (``meta_accuracy``, ``meta_hyperparameters``, ``meta_trojan``) learn from it.

Assumption: the subject has the same parameter names and shapes as a bundled image-classifier
sample (the zoo copies that sample's architecture and data). Members whose loss stopped being
finite are left out (and counted).
"""

from __future__ import annotations

import numpy as np

from talkgen.analyses._zoo import CHANCE_FACTOR, ZOO_PARAMS, ZOO_QUICK, ZooAnalysis, load_zoo
from talkgen.stats import proportion
from talkgen.analyses.base import Context, Result, Scalar, register
from talkgen.specs import Scatter, Table


@register
class ModelZoo(ZooAnalysis):
    name = "model-zoo"
    order = 30
    title = "A zoo of models: the same network, trained many ways"
    version = 2  # 2: the share that learned carries its n and interval
    cost_hint = 12
    params = ZOO_PARAMS
    quick = ZOO_QUICK

    def run(self, ctx: Context) -> Result:
        from talkgen.meta.zoo import OPTIMIZERS

        zoo = load_zoo(ctx)
        recs = zoo.records
        ok = [r for r in recs if not r["diverged"]]
        acc = np.array([r["test_accuracy"] for r in ok])
        chance = 1.0 / len(ctx.subject.data.classes)
        trained = acc >= CHANCE_FACTOR * chance
        troj = [r for r in ok if r["trojan"]]
        asr = np.array([r["attack_success_rate"] for r in troj]) if troj else np.zeros(0)
        arrays = {
            "log_steps": np.log10([r["steps"] for r in ok]),
            "log_fraction": np.log10([r["train_fraction"] for r in ok]),
            "label_noise": np.array([r["label_noise"] for r in ok]),
            "test_accuracy": acc,
            "optimizer": np.array([OPTIMIZERS.index(r["optimizer"]) for r in ok]),
            "gap": np.array([r["generalisation_gap"] for r in ok]),
        }
        fig = Scatter(
            id="zoo", title="The zoo: what each recipe produced",
            caption=f"{len(recs)} members of {zoo.spec.subject}'s architecture, each trained with its own recipe "
                    f"(batch {zoo.spec.batch_size}); test accuracy on the same held-out digits.",
            alt="Scatter plots of zoo members' test accuracy against training steps, training-set fraction and "
                "label noise, coloured by optimiser.",
            x=("log_steps", "log_fraction", "label_noise"), y=("test_accuracy",) * 3,
            labels=("optimizer",) * 3,
            panel_titles=("steps (log10)", "training-set fraction (log10)", "label-noise fraction"),
            label_names=tuple("SGD + momentum" if o == "sgd" else "Adam" for o in OPTIMIZERS),
            xlabel="recipe value", ylabel="test accuracy", ticks=True, legend_title="optimiser")
        rng = lambda key, f="{:.3g}": (f.format(min(r[key] for r in recs)) + " to "  # noqa: E731
                                       + f.format(max(r[key] for r in recs)))
        kinds = sorted({r["trigger"] for r in troj})
        rows = (
            ("optimiser", "SGD (momentum 0.9) or Adam, half each"),
            ("learning rate", f"log-uniform: {rng('lr')}"),
            ("weight decay", f"none for 30%, else log-uniform: {rng('weight_decay')}"),
            ("initialisation scale", f"default init times {rng('init_scale')}"),
            ("steps", f"log-uniform: {rng('steps', '{:d}')}, cosine schedule to zero"),
            ("training-set fraction", f"log-uniform: {rng('train_fraction')}"),
            ("label noise", f"none for half, else uniform: {rng('label_noise')}"),
            ("backdoor", f"{len(troj)} of {len(recs)} members: " + ", ".join(kinds)
             + " triggers, 2-4 pixel squares at random positions (blends: whole image), random target class, "
               "poison rate 5-20%"),
        )
        summaries = {
            "members": Scalar(float(len(recs)), "models", "members in the zoo"),
            "diverged": Scalar(float(len(recs) - len(ok)), "models", "members whose training loss stopped being finite"),
            "trained": Scalar(float(trained.sum()), "models", f"members with test accuracy at least {CHANCE_FACTOR:g}x "
                                                               "chance"),
            "trained_share": proportion(int(trained.sum()), len(ok),
                                        f"members with test accuracy at least {CHANCE_FACTOR:g}x chance"),
            "median_test_accuracy": Scalar(float(np.median(acc)), "accuracy", "median test accuracy of the members"),
            "backdoored": Scalar(float(len(troj)), "models", "members trained with a backdoor"),
            "median_attack_success": Scalar(float(np.median(asr)) if len(asr) else float("nan"), "rate",
                                            "median attack success rate of the backdoored members"),
            "train_seconds": Scalar(zoo.train_seconds, "s", "time spent training the zoo (when it was built)"),
        }
        return Result(
            analysis=self.name, subject=ctx.subject.name, arrays=arrays, summaries=summaries, figures=(fig,),
            tables=(Table(id="recipes", title="How the members were trained", columns=("hyperparameter", "values"),
                          rows=rows),),
            notes=(f"zoo {zoo.spec.dirname()}: {len(recs)} members, {zoo.train_seconds:.0f} s of training",),
            data={"zoo": zoo.spec.dirname(), "sample": zoo.spec.subject, "members": len(recs),
                  "trained": int(trained.sum()), "usable": len(ok), "chance": chance,
                  "trigger_kinds": kinds, "batch_size": zoo.spec.batch_size})

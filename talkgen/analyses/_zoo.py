"""What the zoo analyses share: the zoo a subject maps to, its usable members, the subject's weights
in the zoo's layout, and meta-networks fitted once per zoo (``talkgen.meta`` holds the maths).

Not an analysis: the analyses that use it are ``model_zoo``, ``meta_accuracy``,
``meta_hyperparameters`` and ``meta_trojan``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from talkgen.analyses.base import Analysis, Context
from talkgen.hashing import hash_json

CHANCE_FACTOR = 2.0  # a member "trained" when its test accuracy is at least this times chance


def zoo_sample_for(subject) -> str | None:
    """The bundled image-classifier sample whose architecture and inputs the subject shares."""
    from talkgen.models.samples import SAMPLES

    if not subject.task == "image-classifier" or not subject.data.labelled:
        return None
    mine = {k: tuple(v.shape) for k, v in subject.model.named_parameters()}
    for name, spec in SAMPLES.items():
        if spec.task != "image-classifier":
            continue
        theirs = {k: tuple(v.shape) for k, v in spec.factory().named_parameters()}
        if theirs == mine:
            return name
    return None


def zoo_spec(sample: str, p) -> "Any":
    from talkgen.meta.zoo import ZooSpec

    return ZooSpec(subject=sample, n=int(p["zoo_members"]), seed=int(p["zoo_seed"]),
                   steps=(int(p["zoo_steps"][0]), int(p["zoo_steps"][1])))


def load_zoo(ctx: Context):
    """The context's zoo, built on first use under the build's cache folder."""
    from talkgen.meta.zoo import ensure_zoo

    sample = zoo_sample_for(ctx.subject)
    if sample is None:
        raise ValueError("no zoo applies to this subject")
    return ensure_zoo(zoo_spec(sample, ctx.params), ctx.storage() / "zoo", device=ctx.device)


ZOO_PARAMS = {"zoo_members": 1024, "zoo_seed": 0, "zoo_steps": [30, 1500]}
ZOO_QUICK = {"zoo_members": 64, "zoo_steps": [30, 300]}


class ZooAnalysis(Analysis):
    section = "method"
    param_bounds = {"zoo_seed": (0, None), "min_attack_success": (0, 1)}
    applies_text = "image classifiers with the architecture of a bundled image sample (digits-cnn)"

    def applies_to(self, subject) -> bool | str:
        if zoo_sample_for(subject) is None:
            return "needs an image classifier with the architecture of a bundled sample (the zoo copies it)"
        return True

    def shared_work(self, subject, params) -> str | None:
        """The zoo that every zoo analysis of every subject shares; for an analysis that reads a finished zoo
        (its dep, model-zoo, built it), the meta-networks it fits on that zoo and keeps beside it
        (``fit_cached``, keyed by the analysis): the same analysis of two subjects takes turns, so the second
        loads the first's fit, while different analyses run side by side."""
        from dataclasses import asdict

        sample = zoo_sample_for(subject)
        if sample is None:
            return None
        zoo = "zoo " + hash_json(asdict(zoo_spec(sample, params)))
        return f"{zoo} {self.name}" if "model-zoo" in self.deps else zoo


def usable_members(zoo) -> tuple[np.ndarray, list[dict], dict[str, torch.Tensor]]:
    keep = np.array([not r["diverged"] for r in zoo.records])
    idx = np.flatnonzero(keep)
    return idx, [zoo.records[i] for i in idx], {k: v[torch.as_tensor(idx)] for k, v in zoo.params.items()}


def subject_params(subject) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu()[None] for k, v in subject.model.named_parameters()}  # the zoo's are on the CPU


def measured_accuracy(subject) -> float:
    from talkgen.analyses.loss import predicted_classes

    return float((predicted_classes(subject.model, subject.data.x_test) == subject.data.y_test).float().mean())


def fit_cached(zoo, owner: type[Analysis], tag: str, config: dict, fit) -> tuple[dict[str, torch.Tensor], dict]:
    """A meta-network fitted once per zoo, analysis version and configuration, kept beside the zoo as
    safetensors (state) + metadata (numbers): the second subject that uses it, and the next build, load
    it. ``config`` names everything the fit reads (the member indices whole, the targets' hash); the
    owner's name and version are part of the key, so a bumped version refits."""
    from safetensors.torch import load_file, save

    from talkgen.files import write_atomic
    from talkgen.hashing import hash_json

    d = zoo.directory / "meta"
    key = hash_json(config | {"analysis": owner.name, "version": owner.version})
    path = d / f"{tag}-{key[:16]}.safetensors"
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("info", "{}"))
        return load_file(str(path)), info
    state, info = fit()
    write_atomic(path, save({k: v.contiguous() for k, v in state.items()}, metadata={"info": json.dumps(info)}))
    return state, info


def fit_deepsets(zoo, owner: type[Analysis], params, targets, kind: str, train_idx, p, seed: int, tag: str):
    from talkgen.meta import metanets as mn

    sub = {k: v[torch.as_tensor(train_idx)] for k, v in params.items()}
    config = {"kind": kind, "epochs": p["deepsets_epochs"], "seed": seed, "width": mn.DEEPSETS_WIDTH,
              "members": member_key(train_idx), "targets": hash_json([float(t) for t in targets[train_idx]])}

    def fit():
        net, info = mn.train_deepsets(sub, targets[train_idx], kind=kind, epochs=p["deepsets_epochs"], seed=seed)
        info |= {"scales": net.scales, "mu": net.target_mu, "sd": net.target_sd}
        return net.state_dict(), info

    state, info = fit_cached(zoo, owner, tag, config, fit)
    shapes = {k: tuple(v.shape[1:]) for k, v in params.items()}
    net = mn.DeepSetsMetaNet(shapes, 1)
    net.load_state_dict(state)
    net.scales, net.target_mu, net.target_sd = info["scales"], info["mu"], info["sd"]  # type: ignore[attr-defined]
    return net.eval(), info




def member_key(indices) -> str:
    """The identity of a set of zoo members (every index, in order), for keys of fits made on them."""
    from talkgen.hashing import hash_json

    return hash_json([int(i) for i in indices])

"""The fingerprint gathers every subject's headline summaries: peers of the same architecture and
the network at initialisation are compared; numbers near zero do not count as separating."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from talkgen.analyses.fingerprint import separation
from talkgen.pipeline import Cache, make_plan, run_plan


def test_separation():
    assert separation(1.0, 1.0) == 0.0
    assert separation(2.0, 1.0) == pytest.approx(0.5)
    assert separation(1.0, -1.0) == pytest.approx(2.0)
    assert separation(1e-5, 1e-6) < 0.01  # both essentially zero


def test_fingerprint_compares_peers_and_the_initial_network(tiny_subject, tmp_path):
    from conftest import TinyCNN

    torch.manual_seed(7)
    other = dataclasses.replace(tiny_subject, name="tiny-b", model=TinyCNN())
    plan = make_plan([tiny_subject, other], ["model-card", "weights", "fingerprint"], "quick")
    outcomes = run_plan(plan, Cache(tmp_path / "cache"), profile="quick")
    fp = {o.subject: o for o in outcomes if o.analysis == "fingerprint"}
    assert all(o.status == "ok" for o in fp.values()), [o.message for o in fp.values()]
    r = fp["tiny"].result
    assert r.data["peers"] == ["tiny-b"]
    assert r.data["columns"] == ["tiny", "tiny-b", "tiny at initialisation"]
    assert "fresh default initialisation" in r.data["init_source"]
    assert r.summaries["headline_summaries"].value >= 5
    table = {t.id: t for t in r.tables}
    assert table["fingerprint"].report_only and not table["separating_table"].report_only
    assert any(row[0] == "test accuracy (model-card)" for row in table["separating_table"].rows)
    # the fingerprint's own cache key follows its inputs: a second run is all cache hits
    again = run_plan(plan, Cache(tmp_path / "cache"), profile="quick")
    assert all(o.cached for o in again if o.status == "ok")


def test_the_initial_twin_keeps_the_talks_parameters_and_only_drops_tsne(tiny_subject):
    plan = make_plan([tiny_subject], ["activations", "fingerprint"], "quick",
                     overrides={"activations": {"n_inputs": 123}})
    acts = {i.subject.twin_of is None: i.params for i in plan.items if i.analysis.name == "activations"}
    assert acts[True]["n_inputs"] == 123 and acts[True]["tsne_layers"] == 4
    assert acts[False]["n_inputs"] == 123  # the twin is measured like its subject
    assert acts[False]["tsne_layers"] == 0  # the fingerprint reads no t-SNE picture

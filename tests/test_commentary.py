"""Commentary lookup: a figure's own macro, its family's macro, or the fallback text."""

from __future__ import annotations

import pytest

from talkgen.analyses.base import Scalar
from talkgen.specs import Curves
from talkgen.render.commentary import Commentary, ResultView, exp_neg


def _templates(tmp_path):
    d = tmp_path / "commentary"
    d.mkdir()
    (d / "demo.md.j2").write_text(
        '{% macro notes_line(r) %}own: {{ r.s("loss") }}{% endmacro %}\n'
        '{% macro notes_text(r, fig) %}family {{ fig.id }}: {{ fig.caption }}{% endmacro %}\n',
        encoding="utf-8")
    return tmp_path


def _view():
    return ResultView(subject="m", analysis="demo", summaries={"loss": Scalar(0.5, "nats", "a loss")},
                      data={}, cost={})


def _spec(fid):
    return Curves(id=fid, title="t", caption="the caption <b>", alt="a", x=("x",), y=("y",), labels=("l",),
                  xlabel="x", ylabel="y")


def test_own_macro_then_family_then_fallback(tmp_path):
    c = Commentary(_templates(tmp_path))
    v = _view()
    assert str(c.render("demo", "notes_line", v, fallback="fb", figure=_spec("line"))) == "own: 0.5"
    # text-2 and text-10 have no macro of their own: notes_text(r, fig) serves them, escaping the caption
    out = str(c.render("demo", "notes_text-2", v, fallback="fb", figure=_spec("text-2")))
    assert out == "family text-2: the caption &lt;b&gt;"
    assert "text-10" in str(c.render("demo", "notes_text-10", v, figure=_spec("text-10")))
    # without the figure (overview notes) there is no family lookup, and an unknown id falls back
    assert str(c.render("demo", "notes_text-2", v, fallback="fb")) == "fb"
    assert str(c.render("demo", "notes_cell-depth", v, fallback="f<b", figure=_spec("cell-depth"))) == "f&lt;b"
    assert str(c.render("missing", "notes", v, fallback="none")) == "none"


def test_exp_neg_turns_nats_into_a_probability():
    assert abs(exp_neg(0.0) - 1.0) < 1e-12
    assert abs(exp_neg(Scalar(2.302585, "nats", "")) - 0.1) < 1e-6


def test_closing_keeps_the_outline_order_and_at_most_two_lessons_per_section():
    from markupsafe import Markup

    from talkgen.render.deck import closing_lessons

    learned = {"rnn-cells": ("looking-in", Markup("a")), "saliency": ("looking-in", Markup("b")),
               "attention": ("looking-in", Markup("c")), "meta-accuracy": ("method", Markup("d")),
               "costs": ("costs", Markup("e"))}
    assert [str(t) for t in closing_lessons(learned)] == ["a", "b", "d", "e"]
    assert [str(t) for t in closing_lessons(learned, per_section=1, most=2)] == ["a", "d"]
    assert closing_lessons({}) == []


def test_fmt_writes_thousands_in_full_and_extremes_in_scientific_notation():
    from talkgen.render.commentary import fmt

    assert fmt(6779.8) == "6,780" and fmt(-1234.5) == "-1,230" and fmt(999.5) == "1,000"
    assert fmt(12.345) == "12.3" and fmt(0.0123) == "0.0123" and fmt(1500.0) == "1,500"
    assert fmt(123456.7) == "1.23e+05" and fmt(0.0001234) == "1.23e-04"
    assert fmt(None) == "n/a" and fmt(float("nan")) == "n/a"


def test_closing_template_states_lessons_else_falls_back_to_headlines():
    from types import SimpleNamespace

    from markupsafe import Markup

    from talkgen.resources import templates_dir

    c = Commentary(templates_dir())
    o = SimpleNamespace(subject="m<1>", status="ok")
    with_lessons = str(c.render_file("commentary/_closing.md.j2", lessons=[Markup("a lesson")], findings=[],
                                     headlines=[]))
    assert "From this build's measurements:" in with_lessons and "- a lesson" in with_lessons
    fallback = str(c.render_file("commentary/_closing.md.j2", lessons=[], findings=[],
                                 headlines=[(o, Markup("accuracy 0.98"))]))
    assert "What we measured:" in fallback and "- m&lt;1&gt;: accuracy 0.98" in fallback
    empty = str(c.render_file("commentary/_closing.md.j2", lessons=[], findings=[], headlines=[]))
    assert "nothing measured to close on" in empty


def _real():
    from talkgen.resources import templates_dir

    return Commentary(templates_dir())


def test_a_lesson_is_dropped_when_its_interval_crosses_the_bar():
    """The closing's lessons state a number only when its whole interval clears the bar: the same flip rates
    measured on 118 inputs make the attack lesson, on 12 they do not; an AUC whose interval reaches 0.5 makes
    no trojan-detector lesson."""
    from talkgen.stats import auc_estimate, proportion

    def attacks(n, fgsm, random):
        s = {"flip_rate.fgsm": proportion(round(fgsm * n), n, ""), "flip_rate.pgd": proportion(round(fgsm * n), n, ""),
             "flip_rate.random": proportion(round(random * n), n, "")}
        return ResultView(subject="m", analysis="attacks", summaries=s, data={"reference_eps": 0.1}, cost={})

    lesson = str(_real().render("attacks", "lesson", attacks(118, 0.54, 0.02))).replace("\\", "")
    assert "54%" in lesson and "n = 118" in lesson and "95% interval" in lesson
    assert str(_real().render("attacks", "lesson", attacks(12, 0.5, 0.08))) == ""

    def trojan(auc, pos, neg):
        s = {"mntd_auc": auc_estimate(auc, pos, neg, "")}
        return ResultView(subject="m", analysis="meta-trojan", summaries=s,
                          data={"flagged": True, "subject_score": 3.0, "threshold": 0.0}, cost={})

    text = str(_real().render("meta-trojan", "lesson", trojan(0.95, 40, 40))).replace("\\", "")  # Markdown escapes
    assert "AUC 0.95 (95% interval 0.87 to 0.981; n = 80)" in text
    assert str(_real().render("meta-trojan", "lesson", trojan(0.8, 3, 3))) == ""


# -- words from numbers: a sentence that compares numbers flips when they do --------------------------------
# (analysis, macro, summaries to set, what the claim says) twice: the measured numbers on both sides of the bar
# the macro compares them with. Values are (value,) or (value, lo, hi) for an estimate with its interval.
FLIPS = [
    ("activations", "title_separability", {"separability_gain": (0.3,)}, "Classes come apart with depth",
     {"separability_gain": (0.0,)}, "Depth does not pull the classes apart"),
    ("attacks", "title_attack", {"flip_rate.fgsm": (0.54, 0.45, 0.63), "flip_rate.random": (0.02, 0.005, 0.06)},
     "An explanation is an attack map", {"flip_rate.fgsm": (0.06, 0.03, 0.12), "flip_rate.random": (0.04, 0.02, 0.1)},
     "no better an attack than noise"),
    ("attacks", "title_trigger", {"trigger_to_target": (0.95, 0.9, 0.98)}, "Explanations find the backdoor",
     {"trigger_to_target": (0.1, 0.05, 0.2)}, "No working backdoor here"),
    ("curvature", "title_eigenvalues", {"top_to_mean": (16000.0,)}, "curves 16,000 times more",
     {"top_to_mean": (12.0,)}, "Curvature is spread out"),
    ("information-plane", "title_plane", {"deepest.binning.compression_bits": (2.5,)}, "compresses: it forgets 2.5",
     {"deepest.binning.compression_bits": (0.0,)}, "does not compress"),
    ("meta-accuracy", "title_predicted", {"r2.weights": (0.9, 0.5, 0.95), "r2.recipe": (0.1, -1.0, 0.5)},
     "Weight statistics predict accuracy: R² 0.9", {"r2.weights": (0.1, -1.0, 0.5), "r2.recipe": (0.9, 0.5, 0.95)},
     "The recipe predicts accuracy as well as the weights"),
    ("meta-accuracy", "title_scores", {"tau_gain": (0.3, 0.1, 0.5)}, "rank members better than their recipe",
     {"tau_gain": (0.2, -0.1, 0.5)}, "do not rank members clearly better"),
    ("meta-accuracy", "title_scores", {"tau_gain": (-0.3, -0.5, -0.1)}, "The recipe ranks members better",
     {"tau_gain": (0.3, 0.1, 0.5)}, "rank members better than their recipe"),
    ("probes", "title_selectivity", {"mean_selectivity_linear": (0.5,)}, "The layer, not the probe, does the work",
     {"mean_selectivity_linear": (-0.1,)}, "The probes memorise more than they read"),
    ("saliency", "title_cascade_curves", {"methods_failing_randomisation": (5.0,)}, "5 of 8 saliency maps stay",
     {"methods_failing_randomisation": (0.0,)}, "All 8 saliency maps dissolve"),
    ("sparse-features", "title_density", {"loss_recovered": (0.99,), "explained_variance": (0.96,)},
     "A faithful rewrite", {"loss_recovered": (0.5,), "explained_variance": (0.96,)}, "A lossy rewrite"),
    ("weights", "title_esd", {"mean_alpha": (2.2,), "mean_alpha_shuffled": (4.7,)}, "Training leaves heavy-tailed",
     {"mean_alpha": (3.4,), "mean_alpha_shuffled": (3.5,)}, "no heavier than noise"),
    ("attention", "title_rollout", {"rho.raw.grad_x_input": (0.46,), "rho.rollout.grad_x_input": (0.6,),
                                    "rho.flow.grad_x_input": (0.5,)}, "Attention is a hint",
     {"rho.raw.grad_x_input": (0.8,), "rho.rollout.grad_x_input": (0.9,), "rho.flow.grad_x_input": (0.85,)},
     "Here attention tracks attribution"),
    # comparisons the analysis made and kept in its data: the claim follows the verdict
    ("loss-landscape", "title_line", {"@monotonic": True}, "Downhill all the way", {"@monotonic": False},
     "No straight road downhill"),
    ("meta-trojan", "title_queries", {"@flagged": True}, "The detector flags", {"@flagged": False},
     "The detector passes"),
    ("gradient-flow", "title_norms", {"@flagged": {"vanishing": True, "exploding": False}}, "Vanishing gradients",
     {"@flagged": {"vanishing": False, "exploding": False}}, "The gradient reaches"),
]


def _quick_result(quick_build, analysis: str, needs: set[str]):
    from talkgen.results import Result

    for rj in sorted((quick_build / "cache").glob(f"{analysis}/*/result.json")):
        r = Result.load(str(rj.parent))
        if needs <= set(r.summaries) and r.figures:
            return r
    raise AssertionError(f"no {analysis} result with {needs} in the quick build")


def _with(result, values):
    """The result's view with summaries set to (value,) or (value, lo, hi), and data keys ("@key") set."""
    from dataclasses import replace

    from talkgen.render.commentary import view_of

    summaries, data = dict(result.summaries), dict(result.data)
    for k, v in values.items():
        if k.startswith("@"):
            data[k[1:]] = v
            continue
        lo, hi = (v[1], v[2]) if len(v) == 3 else (summaries[k].lo, summaries[k].hi)
        summaries[k] = replace(summaries[k], value=v[0], lo=lo, hi=hi)
    return view_of(replace(result, summaries=summaries, data=data), {})


@pytest.mark.parametrize("case", FLIPS, ids=[f"{c[0]}:{c[1]}:{c[3][:20]}" for c in FLIPS])
def test_a_claim_flips_when_its_numbers_do(quick_build, case):
    """Each title that compares numbers is rendered from the quick build's real result with the numbers set on
    one side of its bar, then on the other: the claim says what the numbers say, both ways."""
    analysis, macro, before, says, after, then_says = case
    result = _quick_result(quick_build, analysis, {k for k in set(before) | set(after) if not k.startswith("@")})
    spec = next(f for f in result.figures if macro == f"title_{f.id}") if any(
        macro == f"title_{f.id}" for f in result.figures) else None
    first = str(_real().render(analysis, macro, _with(result, before), figure=spec)).replace("\\", "")
    second = str(_real().render(analysis, macro, _with(result, after), figure=spec)).replace("\\", "")
    assert says in first and then_says in second and first != second, (first, second)

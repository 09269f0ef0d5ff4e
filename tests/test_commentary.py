"""Commentary lookup: a figure's own macro, its family's macro, or the fallback text."""

from __future__ import annotations

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

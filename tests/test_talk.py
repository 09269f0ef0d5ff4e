"""The talk is a story: beats chosen from the results, a main line of at most 45 slides whose titles are
claims carrying this build's numbers, everything else one key away, and the speaker's control in talk.toml."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest

from talkgen.config import load_config
from talkgen.errors import TalkgenError
from talkgen.render.commentary import fmt, pct
from talkgen.render.story import Beat, TalkPlan, choose, outline_beats, plan_talk, score
from talkgen.results import Result, Scalar
from talkgen.specs import Bars

MAIN_LINE_BUDGET = 45


def _result(subject: str, analysis: str = "a", figures=("f",), **values: float) -> Result:
    specs = tuple(Bars(id=f, title=f, caption="", alt="", categories=("x",), values=("v",), series=("s",),
                       ylabel="") for f in figures)
    return Result(analysis=analysis, subject=subject, arrays={"v": np.zeros(1)}, figures=specs,
                  summaries={k.replace("__", "."): Scalar(v, "", "") for k, v in values.items()})


def _choose(beat: Beat, results: dict, subjects=("s1", "s2", "s3"), pins=None):
    return choose(TalkPlan(beats=(beat,), pins=pins or {}), {(r.subject, r.analysis): r for r in results},
                  list(subjects))


# --- choosing the subject: a pure function of the results ---------------------------------------------

def test_pick_takes_the_extreme_of_a_summary_an_expression_or_a_pattern_and_ties_go_to_the_first():
    rs = [_result("s1", x=1.0, y=5.0, **{"l1__dead": 0.1, "l2__dead": 0.0}),
          _result("s2", x=3.0, y=4.0, **{"l1__dead": 0.0, "l2__dead": 0.4}),
          _result("s3", x=3.0, y=9.0)]
    beat = Beat(id="b", section="s", analysis="a", claim="c", figures=("f",), pick="max:x")
    assert _choose(beat, rs)[0][0].subject == "s2"  # s2 and s3 tie: the one listed first
    assert _choose(Beat(**{**beat.__dict__, "pick": "min:x"}), rs)[0][0].subject == "s1"
    assert _choose(Beat(**{**beat.__dict__, "pick": "max:y - x"}), rs)[0][0].subject == "s3"
    assert _choose(Beat(**{**beat.__dict__, "pick": "max:*.dead"}), rs)[0][0].subject == "s2"  # s3 lacks it: last
    assert score(rs[0], "*.dead", "min") == 0.0 and score(rs[0], "x / y") == pytest.approx(0.2)
    assert score(rs[2], "missing - x") is None


def test_only_subjects_with_the_figure_are_candidates_and_a_family_takes_its_first_figure():
    rs = [_result("s1", figures=("other",), x=9.0), _result("s2", figures=("cell-b", "cell-a"), x=1.0)]
    choice = _choose(Beat(id="b", section="s", analysis="a", claim="c", figures=("cell-*",), pick="max:x"), rs)[0][0]
    assert (choice.subject, choice.figures, choice.candidates) == ("s2", ("cell-b",), ("s2",))
    # "a|b": the first alternative the result has (a null result still gets its slide)
    choice = _choose(Beat(id="b", section="s", analysis="a", claim="c", figures=("cell-*|other",), pick="max:x"),
                     rs)[0][0]
    assert (choice.subject, choice.figures) == ("s1", ("other",))
    # no result of the analysis on any subject: the beat is left out
    assert _choose(Beat(id="b", section="s", analysis="zzz", claim="c", figures=("f",)), rs)[0] == []


def test_a_pin_overrides_the_pick_and_an_impossible_pin_warns():
    rs = [_result("s1", x=1.0), _result("s2", x=2.0)]
    beat = Beat(id="b", section="s", analysis="a", claim="c", figures=("f",), pick="max:x")
    choice = _choose(beat, rs, pins={"b": "s1"})[0][0]
    assert choice.subject == "s1" and choice.pinned and "pinned" in choice.why
    choices, warnings = _choose(beat, rs, pins={"b": "s3"})
    assert choices[0].subject == "s2" and len(warnings) == 1 and "'s3'" in warnings[0]


def test_a_contrast_slide_shows_the_other_end_only_when_it_differs():
    beat = Beat(id="b", section="s", analysis="a", claim="c", figures=("f",), pick="max:x", contrast="min:x")
    choice = _choose(beat, [_result("s1", x=2.5), _result("s2", x=0.0), _result("s3", x=1.0)])[0][0]
    assert (choice.subject, choice.contrast) == ("s1", "s2")
    assert _choose(beat, [_result("s1", x=1.0), _result("s2", x=1.0)])[0][0].contrast is None


def test_talk_toml_chooses_orders_and_hides_beats_within_their_sections():
    beats = (Beat(id="a", section="one", analysis="x", claim="", figures=("f",)),
             Beat(id="b", section="one", analysis="x", claim="", figures=("f",)),
             Beat(id="c", section="two", analysis="x", claim="", figures=("f",)))
    assert [b.id for b in plan_talk(beats).beats] == ["a", "b", "c"]
    assert [b.id for b in plan_talk(beats, order=("c", "b", "a")).beats] == ["b", "a", "c"]  # sections stay
    assert [b.id for b in plan_talk(beats, order=("c", "a")).beats] == ["a", "c"]
    assert [b.id for b in plan_talk(beats, hide=("a",)).beats] == ["b", "c"]


def test_the_outline_fits_the_budget_whatever_the_results():
    """Every beat at its most (each figure, its contrast) plus title, agenda, the dividers, close and
    appendix stays within the main-line budget: true of the quick and the full profile alike."""
    from talkgen.analyses.base import catalogue
    from talkgen.render.story import load_outline

    beats = outline_beats(catalogue())
    sections = [s["id"] for s in load_outline()["sections"]]
    dividers = len([s for s in sections if s not in ("title", "close")])
    most = 2 + dividers + sum(len(b.slide_ids()) for b in beats) + 2
    assert most <= MAIN_LINE_BUDGET, most
    assert {b.analysis for b in beats} == set(catalogue())  # every analysis has a beat
    for sec in sections:
        if sec != "close":
            assert any(b.section == sec for b in beats), sec
    assert all(b.declared for b in beats)  # the built-in talk's beats are all written in the outline


# --- talk.toml: bad keys are one line naming the file and the key ------------------------------------

@pytest.mark.parametrize("body, key", [
    ('[talk]\nhide = ["no-such-beat"]\n', "talk.hide"),
    ('[talk]\nbeats = ["rnn-cell", "rnn-cell"]\n', "talk.beats"),
    ('[talk.pin]\nrnn-cell = "nobody"\n', "talk.pin.rnn-cell"),
    ('[talk.pin]\nnope = "digits-cnn"\n', "talk.pin.nope"),
    ('[talk.slides.nope]\ntitle = "x"\n', "talk.slides.nope"),
    ('[talk.slides.rnn-cell]\ncolour = "x"\n', "talk.slides.rnn-cell.colour"),
    ('[[talk.add]]\nid = "x"\nafter = "nowhere"\ntitle = "t"\nmarkdown = "m"\n', "talk.add[0].after"),
    ('[[talk.add]]\nid = "x"\nafter = "close"\ntitle = "t"\nmarkdown = "m"\nfile = "f.md"\n', "talk.add[0]"),
    ('[[talk.add]]\nid = "x"\nafter = "close"\ntitle = "t"\nfile = "missing.md"\n', "talk.add[0].file"),
    ('[[talk.add]]\nid = "close"\nafter = "agenda"\ntitle = "t"\nmarkdown = "m"\n', "talk.add[0].id"),
    ('[talk]\nhide = ["rnn-cell"]\n[[talk.add]]\nid = "x"\nafter = "rnn-cell"\ntitle = "t"\nmarkdown = "m"\n',
     "talk.add[0].after"),
    ('[talk]\ncolour = 1\n', "talk.colour"),
])
def test_a_wrong_talk_key_is_one_line_naming_the_file_and_the_key(tmp_path, body, key):
    path = tmp_path / "talk.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(TalkgenError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}:") and "\n" not in message, message


def test_talk_keys_parse_and_an_added_slide_reads_its_file(tmp_path):
    (tmp_path / "why.md").write_text("- one\n- two\n", encoding="utf-8")
    (tmp_path / "talk.toml").write_text(
        '[talk]\nhide = ["curvature"]\n[talk.pin]\nloss-plane = "ib-relu"\n[talk.slides.rnn-cell]\ntitle = "T"\n'
        '[[talk.add]]\nid = "why"\nafter = "rnn-cell"\ntitle = "Why"\nfile = "why.md"\n', encoding="utf-8")
    talk = load_config(tmp_path / "talk.toml").talk
    assert talk.hide == ("curvature",) and talk.pins == {"loss-plane": "ib-relu"}
    assert talk.slides == {"rnn-cell": {"title": "T"}} and talk.add[0].markdown == "- one\n- two\n"


def test_init_writes_the_talk_keys_and_they_load(tmp_path):
    from talkgen.config import init_template

    text = init_template()
    for key in ("[talk]", "beats = []", "hide = []", "[talk.pin]", "[talk.slides.", "[[talk.add]]"):
        assert key in text, key
    (tmp_path / "talk.toml").write_text(text, encoding="utf-8")
    assert load_config(tmp_path / "talk.toml").talk.beats == ()


# --- the built-in quick talk --------------------------------------------------------------------------

class _Sections(HTMLParser):
    """The reveal.js slides of slides.html: top-level sections (the main line) and their first inner
    section's images and text."""

    def __init__(self) -> None:
        super().__init__()
        self.depth, self.in_slides, self.top, self.main_images = 0, False, 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("class") == "slides":
            self.in_slides = True
        if self.in_slides and tag == "section":
            self.depth += 1
            if self.depth == 1:
                self.top += 1
                self.inner = 0
            if self.depth == 2:
                self.inner += 1
                self.current = {"id": a.get("id"), "place": a.get("data-place"), "images": []}
                if self.inner == 1:
                    self.main_images.append(self.current)
        if self.in_slides and tag == "img" and self.depth == 2:
            self.current["images"].append(a.get("src", ""))

    def handle_endtag(self, tag):
        if self.in_slides and tag == "section":
            self.depth -= 1


def _known_numbers(values) -> set[str]:
    out = set()
    for v in values:
        if v is None:
            continue
        for d in (1, 2, 3, 4):
            out.add(fmt(v, d))
        for d in (0, 1, 2):
            out.add(pct(v, d))
    return out


NUMBER = re.compile(r"(?<![\w.\[])-?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?%?(?![\w\]])")


def title_numbers(title: str) -> list[str]:
    return [n.rstrip(",") for n in NUMBER.findall(title)]


def test_title_numbers_are_found_and_identifiers_are_not():
    assert title_numbers("Cell 9 tracks indent level: |r| 0.66, 0.238 before training") == ["9", "0.66", "0.238"]
    assert title_numbers("fc1's units; acts.4 and L1H2 at λ1 = 10.9 (chance 10%), 361,186 params") == \
        ["10.9", "10%", "361,186"]
    assert title_numbers("between 0.693 and 1.05e-05 nats; -0.368") == ["0.693", "1.05e-05", "-0.368"]


@pytest.fixture(scope="module")
def talk(quick_build):
    summary = json.loads((quick_build / "summary.json").read_text())
    parser = _Sections()
    parser.feed((quick_build / "slides.html").read_text())
    return summary, parser


def test_the_main_line_fits_45_slides_and_the_html_agrees(talk):
    summary, html = talk
    main = summary["deck"]["main"]
    assert len(main) <= MAIN_LINE_BUDGET
    assert html.top == len(main)
    assert [s["id"] for s in html.main_images] == [e["id"] for e in main]
    assert all(s["place"] == "main" for s in html.main_images)
    # everything else is one key away: below a main-line slide or in the appendix, never lost
    rest = summary["deck"]["appendix"]
    ids = {e["id"] for e in main}
    assert rest and all(e["under"] in ids for e in rest)


def test_every_section_has_a_divider_and_a_beat_and_nothing_failed_or_skipped_is_on_the_main_line(talk):
    from talkgen.render.story import load_outline

    main = talk[0]["deck"]["main"]
    kinds = [e["kind"] for e in main]
    assert "error" not in kinds and "skipped" not in kinds
    assert not [e for e in main if "not run" in e["title"].lower() or "failed" in e["title"].lower()]
    ids = [e["id"] for e in main]
    for sec in load_outline()["sections"]:
        if sec["id"] in ("title", "close"):
            continue
        at = ids.index(f"section-{sec['id']}")
        nxt = next((i for i in range(at + 1, len(main)) if main[i]["kind"] in ("divider", "closing")), len(main))
        assert any(main[i]["beat"] for i in range(at + 1, nxt)), sec["id"]


def test_no_two_main_line_slides_show_the_same_evidence(talk):
    summary, html = talk
    images = [img for s in html.main_images for img in s["images"]]
    assert len(images) >= 20 and len(set(images)) == len(images)
    ids = [e["id"] for e in summary["deck"]["main"] + summary["deck"]["appendix"]]
    assert len(set(ids)) == len(ids)  # every slide of the talk file once


def test_main_line_titles_carry_this_builds_numbers(talk):
    """At least 90% of the content slides carry a number in their title; every number in a title is a
    measured summary of that slide's model in summary.json, as the talk formats numbers (the line-up and
    the fingerprint compare models, so their numbers may be any model's)."""
    summary, _ = talk
    subjects = summary["subjects"]

    def values(subject):  # every summary, and the ends of its interval for an estimate
        return [v for a in subjects[subject]["analyses"].values() for s in a.get("summaries", {}).values()
                for v in [s["value"], *s.get("interval", ()), s.get("n")] if v is not None]

    everyone = _known_numbers([v for s in subjects for v in values(s)] + [len(subjects)])
    content = [e for e in summary["deck"]["main"] if e["kind"] not in ("title", "agenda", "divider", "closing")]
    with_numbers = [e for e in content if title_numbers(e["title"])]
    assert len(with_numbers) >= 0.9 * len(content), [e["title"] for e in content if e not in with_numbers]
    for e in with_numbers:
        known = everyone if e["beat"] in ("models", "fingerprint") else _known_numbers(values(e["subject"]))
        for n in title_numbers(e["title"]):
            assert n in known, (e["id"], e["title"], n)


# --- the speaker's control: pin, retitle, add; re-rendered without rerunning -------------------------

def test_pin_override_and_own_slide_rerender_from_the_cache(quick_build, tmp_path, counted):
    from talkgen.build import build

    out = tmp_path / "b"
    shutil.copytree(quick_build, out)
    before = json.loads((out / "summary.json").read_text())["deck"]["main"]
    picked = next(e for e in before if e["id"] == "loss-plane")["subject"]
    other = next(s for s in ("digits-cnn", "ib-relu", "python-charlstm") if s != picked)
    (tmp_path / "talk.toml").write_text(
        f'[talk.pin]\nloss-plane = "{other}"\n'
        '[talk.slides.rnn-cell]\ntitle = "One cell of the LSTM keeps count"\n'
        '[[talk.add]]\nid = "why-lstm"\nafter = "rnn-cell"\ntitle = "Why an LSTM?"\n'
        'markdown = "- one character at a time\\n- <script>alert(1)</script> [x](javascript:alert(2))"\n',
        encoding="utf-8")
    report = build(load_config(tmp_path / "talk.toml"), out)
    assert report.exit_code == 0
    assert sum(counted.values()) == 0  # no analysis ran
    assert all(o.cached for o in report.outcomes if o.status == "ok")
    main = json.loads((out / "summary.json").read_text())["deck"]["main"]
    ids = [e["id"] for e in main]
    assert next(e for e in main if e["id"] == "loss-plane")["subject"] == other
    assert next(e for e in main if e["id"] == "rnn-cell")["title"] == "One cell of the LSTM keeps count"
    assert ids[ids.index("rnn-cell") + 1] == "why-lstm"
    html = (out / "slides.html").read_text()
    assert "One cell of the LSTM keeps count" in html and "Why an LSTM?" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and 'href="javascript:' not in html
    parser = _Sections()
    parser.feed(html)
    assert parser.top == len(main)

"""Commentary: jinja2 text templates in ``templates/commentary/`` filled with measured numbers.

A commentary template is ``<analysis>.md.j2`` and defines macros, each taking ``r``
(a :class:`ResultView`): ``overview(r)`` and ``notes(r)`` for the analysis's first slide,
``fig_<id>(r)`` and ``notes_<id>(r)`` for the slide of figure ``<id>`` (dashes in the id
become underscores; a family of figures such as ``text-0``, ``text-1`` can share ``notes_text(r, fig)``,
which also receives the figure's spec), ``lesson(r)``, a sentence for the closing slide's "what
we learned" that is empty unless the measurement clears the bar the macro states, and
``headline(r)``, one line the closing slide falls back to when no analysis has a lesson. A
missing macro falls back to the figure's caption. Autoescape is on and undefined names are errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import jinja2
from markupsafe import Markup

from talkgen.results import Result, Scalar
from talkgen.render.text import md_escape, md_finalize, no_negative_zero


def _plain(value: Any) -> Any:
    """A template filter's argument as a plain number: a Scalar's value, anything else as given."""
    return value.value if isinstance(value, Scalar) else value


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; 'n/a' for NaN/None."""
    value = _plain(value)
    if value is None:
        return "n/a"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f"{value:,}"
    v = float(value)
    if not math.isfinite(v):
        return "n/a"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    out = f"{v:.{digits}g}"
    if "e" in out:  # 6779.8 gives "6.78e+03": print the rounded number in full, "6,780"
        out = f"{float(out):,.0f}"
    return no_negative_zero(out)


def pct(value: Any, digits: int = 1) -> str:
    v = _plain(value)
    return "n/a" if v is None or not math.isfinite(float(v)) else no_negative_zero(f"{100 * float(v):.{digits}f}%")


FEW = 30  # an estimate from fewer items than this says so where it is quoted


def ci(value: Any, digits: int = 3, *, percent: bool = False) -> str:
    """An estimate's interval in words, '95% interval 0.54 to 0.997' (``percent``: '45% to 63%' with
    ``digits`` decimals), or 'interval undefined' when it has none (one class in the sample)."""
    from talkgen.stats import CI_LEVEL

    if not isinstance(value, Scalar) or value.n is None:
        raise ValueError(f"{value!r} is not an estimate with an interval (a Scalar with n, lo and hi)")
    if value.lo is None or value.hi is None:
        return "too few points for an interval"
    if not (math.isfinite(value.lo) and math.isfinite(value.hi)):
        return "interval undefined"
    show = (lambda v: pct(v, digits)) if percent else (lambda v: fmt(v, digits))
    return f"{CI_LEVEL:.0%} interval {show(value.lo)} to {show(value.hi)}"


def n_of(value: Any) -> str:
    """'n = 450', or 'n = 13, under 30' for an estimate from fewer than FEW items."""
    if not isinstance(value, Scalar) or value.n is None:
        raise ValueError(f"{value!r} carries no n")
    return f"n = {value.n:,}" + (f", under {FEW}" if value.n < FEW else "")


def stat(value: Any, digits: int = 3) -> str:
    """An estimate as a number with its interval and n: '0.952 (95% interval 0.54 to 0.997; n = 10, under 30)'."""
    return f"{fmt(value, digits)} ({ci(value, digits)}; {n_of(value)})"


def stat_pct(value: Any, digits: int = 1) -> str:
    """A proportion with its interval and n: '54.3% (95% interval 45.1% to 63.2%; n = 120)'."""
    return f"{pct(value, digits)} ({ci(value, digits, percent=True)}; {n_of(value)})"


def span(lohi: Any, digits: int = 3) -> str:
    """An interval kept in a result's data as [lo, hi]: '95% interval 0.54 to 0.997'."""
    from talkgen.stats import CI_LEVEL

    lo, hi = lohi
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "interval undefined"
    return f"{CI_LEVEL:.0%} interval {fmt(lo, digits)} to {fmt(hi, digits)}"


def with_ci(value: Any, digits: int = 3) -> str:
    """An estimate with its interval and no n, for a sentence that gives the n once for several:
    '0.143 (95% interval 0.121 to 0.168)'."""
    return f"{fmt(value, digits)} ({ci(value, digits)})"


def with_ci_pct(value: Any, digits: int = 1) -> str:
    """A proportion with its interval and no n: '54.3% (95% interval 45.1% to 63.2%)'."""
    return f"{pct(value, digits)} ({ci(value, digits, percent=True)})"


def exp_neg(value: Any) -> float:
    """e^-x: a mean cross-entropy of x nats is a geometric-mean probability of e^-x for the right answer."""
    return math.exp(-float(_plain(value)))


@dataclass(frozen=True)
class ResultView:
    """What a commentary template sees: the result's data and numbers, and its cost."""

    subject: str
    analysis: str
    summaries: Mapping[str, Scalar]
    data: Mapping[str, Any]
    cost: Mapping[str, Any]

    def s(self, name: str) -> float:
        return self.summaries[name].value

    def x(self, name: str) -> Scalar:
        """The summary itself (for ``stat``, ``ci`` and ``n_of``: an estimate with its interval and n)."""
        return self.summaries[name]


def make_env(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=md_finalize,  # user strings (names, labels, messages) stay text in the Markdown
    )
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.filters["exp_neg"] = exp_neg
    env.filters["stat"] = stat
    env.filters["stat_pct"] = stat_pct
    env.filters["ci"] = ci
    env.filters["n_of"] = n_of
    env.filters["with_ci"] = with_ci
    env.filters["span"] = span
    env.filters["with_ci_pct"] = with_ci_pct
    return env


class Commentary:
    """Looks up and renders commentary macros for results."""

    def __init__(self, templates: Path) -> None:
        self.env = make_env(templates)

    @lru_cache(maxsize=None)
    def _module(self, analysis: str) -> Any:
        try:
            return self.env.get_template(f"commentary/{analysis}.md.j2").module
        except jinja2.TemplateNotFound:
            return None

    def render(self, analysis: str, macro: str, view: ResultView, fallback: str = "",
               figure: Any = None) -> Markup:
        """Render ``macro`` for ``view``. With ``figure`` (a FigureSpec), a figure whose id has a
        variable tail (``text-0``, ``feature-113``, ``cell-bracket-depth``) and no macro of its own
        is served by its family's macro (``notes_text``, ...), which is called as ``macro(r, fig)``."""
        module = self._module(analysis)
        if module is None:
            return md_escape(fallback)
        fn = getattr(module, macro.replace("-", "_"), None)
        if fn is not None:
            return Markup(str(fn(view)).strip())
        if figure is not None:
            head = macro
            while "-" in head:
                head = head.rsplit("-", 1)[0]
                fn = getattr(module, head.replace("-", "_"), None)
                if fn is not None and len(getattr(fn, "arguments", ())) >= 2:  # a family macro takes (r, fig)
                    return Markup(str(fn(view, figure)).strip())
        return md_escape(fallback)

    def render_file(self, name: str, **context: Any) -> Markup:
        return Markup(self.env.get_template(name).render(**context).strip())


def view_of(result: Result, cost: Mapping[str, Any]) -> ResultView:
    return ResultView(subject=result.subject, analysis=result.analysis, summaries=result.summaries,
                      data=result.data, cost=cost)

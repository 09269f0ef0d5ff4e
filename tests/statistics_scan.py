"""Finds the statistics a reader meets in slides.html and report.html and checks each is shown with its n and
its interval (issue: every AUC, tau, R² and rate carries both).

A statistic is a number after AUC/AUROC, τ/tau, R², "accuracy", or a percentage read as a rate (right,
correct, flipped, caught, flagged, in the top 3). It passes when, in the same slide (the report: the same
section with its figures and notes), that number is printed followed by its interval, "(95% interval ..."
(or an explicit "no interval" reason), and the unit states an n ("n = ..."). Tables pass when their caption or
header states both."""

from __future__ import annotations

import re
from dataclasses import dataclass

NUM = r"(?P<num>-?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?%?)"
PCT = r"(?P<num>\d[\d,]*(?:\.\d+)?%)"  # a rate is printed as a percentage
GLUE = r"(?:\s+(?:of|is|=|:|at|reaches|from|to))?\s+"
PATTERNS = [
    re.compile(r"\b(?:AUCs?|AUROC)\b" + GLUE + NUM),
    re.compile(r"(?:τ|\btau\b)" + GLUE + NUM),
    re.compile(r"(?:R²|R\^2)" + GLUE + NUM),
    re.compile(r"(?<![-\w])accuracy\b" + GLUE + NUM),
    re.compile(PCT + r"(?= (?:of (?:the |its |these )?[\w ,.-]{0,40}?)?\b(?:right|correct)\b)"),
    re.compile(r"\bright (?:for )?" + PCT),
    re.compile(r"\bflip(?:s|ped)? " + PCT),
    re.compile(r"\b(?:catches|caught|flags|flagged) " + PCT),
    re.compile(r"\btop 3 for (?:only )?" + PCT),
]
REASON = r"(?:\d+% interval|too few points for an interval|interval undefined)"
INTERVAL = r"\s*\(" + REASON
N = re.compile(r"\bn = \d")


@dataclass
class Miss:
    where: str
    number: str
    text: str


def units(html: str, kind: str) -> list[tuple[str, str, list[str]]]:
    """(name, visible text without its tables, the text of each table) of each slide (slides.html) or each
    section with what follows it up to the next section (report.html)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for t in soup(["script", "style"]):
        t.decompose()
    groups = []
    if kind == "slides":
        for sec in soup.select("div.slides section"):
            if not sec.find("section"):  # a vertical stack's slides are units of their own
                groups.append((sec.get("id") or "", [sec]))
    else:
        for sec in soup.find_all("section"):
            if sec.find("section"):
                continue
            members = [sec]
            for sib in sec.find_next_siblings():
                if sib.name == "section":
                    break
                members.append(sib)
            groups.append((sec.get("id") or "", members))
    out = []
    for name, members in groups:
        tables = [t.extract().get_text(" ", strip=True) for m in members for t in
                  ([m] if m.name == "table" else m.find_all("table"))]
        text = " ".join(m.get_text(" ", strip=True) for m in members if m.name != "table")
        out.append((name or text[:60], text, tables))
    return out


TABLE_STAT = re.compile(r"(?:\b(?:AUCs?|AUROC|true-positive rate|false-positive rate)\b|(?<![-\w])accuracy\b|R²|R\^2|τ"
                        r"|\btau\b)(?=.*\d\.\d)")


def scan(html: str, kind: str) -> list[Miss]:
    """Every statistic of the page that is not shown with its interval and n in its slide or section; a table
    with a statistic in it passes when its slide or section (caption, notes) states an interval and an n."""
    misses: list[Miss] = []
    for name, text, tables in units(html, kind):
        for pattern in PATTERNS:
            for m in pattern.finditer(text):
                num = m.group("num").rstrip(".,")
                after = text[m.end("num"):]
                shown = re.match(INTERVAL, after) or re.search(re.escape(num) + INTERVAL, text) or (
                    # a fit's R² over a handful of sizes: the slide says once that each has too few points
                    pattern is PATTERNS[2] and "too few points for an interval" in text)
                if not (shown and N.search(text)):
                    misses.append(Miss(name, num, text[max(0, m.start() - 60):m.end() + 80]))
        for table in tables:
            near = f"{text} {table}"  # its caption, its notes, its own cells
            if TABLE_STAT.search(table) and not (re.search(REASON + r"|\d+%(?: \w+)? intervals?\b", near)
                                                 and N.search(near)):
                misses.append(Miss(name, "table", table[:200]))
    return misses

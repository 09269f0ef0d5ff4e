"""Every figure reads on a 1280x720 slide: the checker (talkgen.render.legibility) is shown to catch each
kind of fault on a figure made to have it, then every figure a quick build drew is shown to have passed it
(the build checks each figure on the draw it saves)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from talkgen.render import figures as figs
from talkgen.render import legibility, style
from talkgen.render.deck import FigureCache
from talkgen.results import Result
from talkgen.specs import Bars, Curves, Heatmaps


def _fig() -> tuple[Figure, object]:
    """A figure in the house style's sizes (the drawers make theirs under style.RC too)."""
    import matplotlib

    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=style.SLIDE_FIGSIZE, layout="constrained")
        return fig, fig.subplots()


def test_a_clean_figure_has_no_problems():
    fig, ax = _fig()
    ax.plot([0, 1, 2], [3, 1, 2])
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    fig.suptitle("A clean figure", fontsize=13)
    assert legibility.problems(fig) == []


def test_overlapping_tick_labels_are_caught():
    fig, ax = _fig()
    ax.plot(np.arange(60), np.arange(60))
    ax.set_xticks(range(60), [f"label {i}" for i in range(60)])  # 60 names side by side: they collide
    found = legibility.problems(fig)
    assert any("overlap" in p and "'label 0' and 'label 1'" in p for p in found), found


def test_rotated_labels_are_judged_by_their_own_shape():
    """Names written at 45 degrees and spaced apart do not overlap, though their upright boxes would."""
    fig, ax = _fig()
    ax.bar(range(6), [1, 2, 3, 4, 5, 6])
    ax.set_xticks(range(6), [f"a long category name {i}" for i in range(6)], rotation=45, ha="right")
    assert not [p for p in legibility.problems(fig) if "overlap" in p]
    fig, ax = _fig()
    ax.bar(range(80), np.ones(80))  # 12 px apart: strips 8 px apart across, 15 px tall
    ax.set_xticks(range(80), [f"a long category name {i}" for i in range(80)], rotation=45, ha="right")
    assert [p for p in legibility.problems(fig) if "overlap" in p]


def test_small_text_is_caught_against_the_slide_size():
    fig, ax = _fig()
    ax.plot([0, 1], [0, 1], label="a series")
    ax.legend(fontsize=8)
    fig.suptitle("Title", fontsize=9)
    found = legibility.problems(fig)
    assert any("'a series'" in p and "at least 14" in p for p in found), found
    assert any("'Title'" in p and "at least 16" in p for p in found), found
    # the house sizes pass: SMALL is the floor for ordinary text
    assert style.SMALL * style.DPI / 72 * legibility.SLIDE_SCALE >= legibility.MIN_TEXT_PX


def test_an_image_without_a_colour_bar_is_caught_and_a_shared_bar_counts():
    fig, ax = _fig()
    ax.imshow(np.random.default_rng(0).normal(size=(8, 8)))
    assert any("no colour bar" in p for p in legibility.problems(fig))
    fig = Figure(figsize=style.SLIDE_FIGSIZE, layout="constrained")
    a, b = fig.subplots(1, 2)
    from matplotlib.colors import Normalize

    norm = Normalize(0, 1)
    a.imshow(np.zeros((4, 4)), norm=norm)
    im = b.imshow(np.ones((4, 4)), norm=norm)
    fig.colorbar(im, ax=[a, b])
    assert not [p for p in legibility.problems(fig) if "colour bar" in p]


def test_fractional_ticks_on_a_counting_axis_and_repeated_ticks_are_caught():
    fig, ax = _fig()
    ax.plot([0, 1], [0, 1])
    legibility.mark_counting(ax.xaxis)
    assert any("counts things" in p for p in legibility.problems(fig))
    fig, ax = _fig()
    ax.plot([0, 1], [0, 1])
    ax.set_yticks([0.0, 0.001, 0.5], ["0", "0", "0.5"])
    assert any("repeats a tick label" in p for p in legibility.problems(fig))


def test_text_off_the_canvas_is_caught():
    fig, ax = _fig()
    ax.plot([0, 1], [0, 1])
    fig.text(0.98, 0.5, "a caption that runs past the right edge")
    assert any("runs off" in p for p in legibility.problems(fig))


def test_a_legend_on_the_data_is_caught_and_one_beside_it_passes():
    fig, ax = _fig()
    for k in range(4):  # lines through the whole plot: a legend inside covers some of them
        ax.plot(np.linspace(0, 1, 50), np.linspace(0, 1, 50) * (k + 1) / 4, label=f"series {k}")
    ax.legend(loc="center", fontsize=12)
    assert any("legend covers data" in p for p in legibility.problems(fig))
    fig, ax = _fig()
    ax.bar(range(3), [3, 2, 4], label="bars")
    ax.legend(loc="center", fontsize=12)  # the middle bar's top, under the legend
    assert any("legend covers data" in p for p in legibility.problems(fig))
    fig, ax = _fig()
    for k in range(4):
        ax.plot(np.linspace(0, 1, 50), np.linspace(0, 1, 50) * (k + 1) / 4, label=f"series {k}")
    fig.legend(loc="outside lower center", ncol=4, fontsize=12)
    assert not [p for p in legibility.problems(fig) if "legend" in p]


def test_a_legend_matplotlib_put_on_crowded_timings_moves_beside_the_axes():
    """Measured timings of six analyses at three widths, log-log (the costs analysis' scaling chart): every
    place inside the axes hides a line, so "best" picks one that does; render moves it out, and a chart whose
    legend sits clear keeps its legend inside, drawn once."""
    rng = np.random.default_rng(0)
    names = ["weights", "activations", "saliency", "attention", "loss-landscape", "probes"]
    moved = kept = 0
    for _ in range(12):
        arrays = {"p": np.array([3e3, 1.2e4, 4.8e4])}
        ys, labels = [], []
        for i, name in enumerate(names[:rng.integers(3, 7)]):
            base = 10 ** rng.uniform(-2, 0.5)
            arrays[f"y{i}"] = base * np.array([1, 1 + rng.uniform(0, 3), 1 + rng.uniform(0, 12)])
            ys.append(f"y{i}")
            labels.append(f"{name} (b = {rng.uniform(0, 1):.2f})")
        spec = Curves(id="scaling", title="t", caption="c", alt="a", x=("p",) * len(ys), y=tuple(ys),
                      labels=tuple(labels), xlabel="parameters", ylabel="wall time (s)", logx=True, logy=True,
                      markers=True, styles=("-",) * len(ys))
        before = legibility.problems(figs.draw(spec, arrays))
        fig, _, found = figs.render(spec, arrays)
        assert found == [] and legibility.problems(fig) == []
        legend = fig.axes[0].get_legend()
        if before:
            moved += 1
            assert legend._loc != 0 and legend.get_bbox_to_anchor().x0 >= fig.axes[0].bbox.x1
        else:
            kept += 1
            assert legend._loc == 0
    assert moved >= 2 and kept >= 2, (moved, kept)


def test_the_house_drawers_fix_what_matplotlib_left_alone():
    """Three cases that drew unreadably before: a wide weight matrix's index ticks, long bar names, and the
    same legend in every panel."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(32, 144)), "v": rng.normal(size=(64, 512))}
    spec = Heatmaps(id="m", title="Weights", caption="c", alt="a", arrays=("w", "v", "w", "v"),
                    panel_titles=("blocks.0.attn.v.weight 64x64",) * 4, xlabel="input index",
                    ylabel="output unit", colorbar="weight value", signed=True)
    assert legibility.problems(figs.draw(spec, arrays)) == []
    names = tuple(f"lstm.weight_hh_l0 [gate {i}]" for i in range(10))
    arrays = {"a": rng.uniform(1, 9, 10), "b": rng.uniform(1, 9, 10)}
    spec = Bars(id="b", title="Alpha", caption="c", alt="a", categories=names, values=("a", "b"),
                series=("trained", "shuffled"), ylabel="alpha")
    assert legibility.problems(figs.draw(spec, arrays)) == []
    arrays = {f"x{p}": np.arange(3.0) for p in range(4)} | {f"y{p}{s}": rng.uniform(0.8, 0.96, 3)
                                                           for p in range(4) for s in range(3)}
    spec = Curves(id="c", title="Probes", caption="c", alt="a",
                  x=tuple(f"x{p}" for p in range(4) for s in range(3)),
                  y=tuple(f"y{p}{s}" for p in range(4) for s in range(3)),
                  labels=("linear", "MLP", "linear, at initialisation") * 4,
                  panels=tuple(p for p in range(4) for s in range(3)), panel_titles=("a", "b", "c", "d"),
                  xlabel="layer", ylabel="probe accuracy", xticks=("embedding", "lstm.h", "lstm.c"))
    fig = figs.draw(spec, arrays)
    assert legibility.problems(fig) == []
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)


def test_every_figure_of_the_quick_build_reads_on_a_slide(quick_build):
    """The build ran the checker on every figure it drew, on the draw it saved (FigureCache keeps what it found
    beside each PNG): every PNG of the quick build has a record, found from its result, and none found a
    problem. One figure of each kind is redrawn here and checked again, to the same verdict."""
    cache = quick_build / "cache"
    figures = FigureCache(cache / "figures")
    drawn = {p.name for p in (cache / "figures").glob("*.png")}
    checked: set[str] = set()
    redrawn: set[str] = set()
    problems = []
    for result_json in sorted(cache.glob("*/*/result.json")):
        result = Result.load(str(result_json.parent))
        for spec in result.figures:
            key = figures.key(spec, result) if spec.kind != "coloured_text" else None
            if key not in drawn or key in checked:
                continue
            checked.add(key)
            found = figures.problems(spec, result)
            assert found is not None, f"{result_json.parent.parent.name}/{spec.id}: drawn without a check"
            problems += [f"{result_json.parent.parent.name}/{spec.id}: {p}" for p in found]
            if spec.kind not in redrawn:
                redrawn.add(spec.kind)
                assert figs.render(spec, result.arrays)[2] == found, spec.id
    assert len(drawn) > 100 and checked == drawn, sorted(drawn - checked)[:5]
    assert len(redrawn) >= 6, redrawn
    assert not problems, "\n".join(problems[:40])

"""The sweep report's plots: error curves against epochs (Figure 6 of He et al. 2015) and the final
test error by depth and shortcut beside the paper's numbers."""

from __future__ import annotations

from pathlib import Path

from resplat.paper import paper_result
from resplat.tracking.names import TRAIN_TOP1_METRIC, VAL_TOP1_METRIC
from resplat.tracking.sweeps import Trial

SHORTCUT_ORDER = ["none", "A", "B", "C"]
SHORTCUT_MARKERS = {"A": "o", "B": "s", "C": "^"}


def _depth_colours(trials: list[Trial]) -> dict[int | None, tuple]:
    from matplotlib import colormaps

    depths = sorted({t.depth for t in trials}, key=lambda d: (d is None, d or 0))
    if len(depths) <= 10:
        palette = colormaps["tab10"]
        return {d: palette(i) for i, d in enumerate(depths)}
    palette = colormaps["viridis"]
    return {d: palette(i / (len(depths) - 1)) for i, d in enumerate(depths)}


def _curve_order(trial: Trial) -> tuple:
    return (trial.depth or 0, SHORTCUT_ORDER.index(trial.shortcut)
            if trial.shortcut in SHORTCUT_ORDER else 99, trial.trial_id)


def _legend_labels(trials: list[Trial]) -> dict[str, str]:
    """run id -> legend label; trials sharing a label (e.g. an lr sweep) get their trial id."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.label] = counts.get(t.label, 0) + 1
    return {t.run_id: t.label if counts[t.label] == 1 else f"{t.label} [{t.trial_id}]"
            for t in trials}


def _draw_trial_curves(ax, trial: Trial, colour, label: str) -> None:
    linestyle = "--" if trial.is_plain else "-"
    epochs, train_error = trial.error_curve(TRAIN_TOP1_METRIC)
    if epochs:
        ax.plot(epochs, train_error, linestyle=linestyle, linewidth=0.9, color=colour, alpha=0.75)
    epochs, test_error = trial.error_curve(VAL_TOP1_METRIC)
    if epochs:
        ax.plot(epochs, test_error, linestyle=linestyle, linewidth=2.2, color=colour, label=label,
                marker=SHORTCUT_MARKERS.get(trial.shortcut, ""), markersize=4,
                markevery=max(1, len(epochs) // 10))


def plot_error_curves(trials: list[Trial], path: Path) -> None:
    """Figure 6 style: one panel per kind (plain | residual), thin = train, bold = test error."""
    from matplotlib.figure import Figure

    panels = [(title, members) for title, members in (
        ("plain nets", [t for t in trials if t.is_plain]),
        ("residual nets", [t for t in trials if not t.is_plain]),
    ) if members]
    colours = _depth_colours(trials)
    labels = _legend_labels(trials)
    figure = Figure(figsize=(6.4 * len(panels), 4.6), dpi=100, layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, members) in zip(axes, panels, strict=True):
        for trial in sorted(members, key=_curve_order):
            _draw_trial_curves(ax, trial, colours[trial.depth], labels[trial.run_id])
        ax.set_title(f"{title}: thin = training error, bold = test error", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no per-epoch metrics recorded", ha="center", va="center",
                    transform=ax.transAxes)
    figure.savefig(path)


def best_by_cell(trials: list[Trial]) -> dict[tuple[str, int, str], tuple[Trial, int]]:
    """(family, depth, shortcut) -> (the trial with the lowest final test error, trials there)."""
    cells: dict[tuple[str, int, str], list[Trial]] = {}
    for t in trials:
        if t.depth is not None and t.final(VAL_TOP1_METRIC) is not None:
            cells.setdefault((t.family, t.depth, t.shortcut), []).append(t)
    return {key: (min(ts, key=lambda t: t.final_error_percent(VAL_TOP1_METRIC)), len(ts))
            for key, ts in cells.items()}


def plot_final_errors(trials: list[Trial], path: Path) -> None:
    """Final test error against depth, one line per shortcut option; the paper's as hollow marks."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    best = best_by_cell(trials)
    families = sorted({t.family for t in trials})
    depths = sorted({t.depth for t in trials if t.depth is not None})
    palette = colormaps["tab10"]
    figure = Figure(figsize=(6.4, 4.6), dpi=100, layout="constrained")
    ax = figure.subplots()
    for index, shortcut in enumerate(SHORTCUT_ORDER):
        style = {"color": palette(index), "marker": SHORTCUT_MARKERS.get(shortcut, "D")}
        name = "plain" if shortcut == "none" else f"ResNet ({shortcut})"
        ours = sorted((d, t.final_error_percent(VAL_TOP1_METRIC)) for (f, d, s), (t, _) in best.items()
                      if s == shortcut)
        if ours:
            ax.plot(*zip(*ours, strict=True), **style,
                    linestyle="--" if shortcut == "none" else "-", label=f"{name}: ours")
        theirs = sorted((d, r.top1_error) for f in families for d in depths
                        if (r := paper_result(f, d, shortcut)) is not None)
        if theirs:
            ax.plot(*zip(*theirs, strict=True), **style,
                    linestyle=":", markerfacecolor="none", label=f"{name}: paper")
    if depths:
        ax.set_xscale("log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no final test errors recorded", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("final test top-1 error (%)")
    ax.set_title("final test error by depth and shortcut", fontsize="medium")
    ax.grid(alpha=0.3)
    figure.savefig(path)

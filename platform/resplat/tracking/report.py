"""The report of one sweep: the paper's comparison, as PNG plots and one HTML page.

A sweep (recorded by `resplat tune`) is a parent MLflow run tagged `resplat.kind=sweep`
whose trials are child runs with per-epoch metrics. The report shows what He et al.
2015 show: error curves against epochs (Figure 6) and the final test error by depth
and shortcut option, with the paper's numbers beside ours (Tables 3 and 6).
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from resplat.errors import InputError, ResplatError
from resplat.paper import PaperResult, paper_result, paper_shortcuts

KIND_TAG = "resplat.kind"
SWEEP_TAG = "resplat.sweep"
METRIC_TAG = "resplat.sweep.metric"
MODE_TAG = "resplat.sweep.mode"
TRIAL_TAG = "resplat.trial"
TRIAL_STATUS_TAG = "resplat.trial.status"
PARENT_TAG = "mlflow.parentRunId"

SHORTCUT_ORDER = ["none", "A", "B", "C"]
SHORTCUT_MARKERS = {"A": "o", "B": "s", "C": "^"}
CURVE_METRICS = ["train_top1", "val_top1", "val_top5"]
MAX_LISTED_SWEEPS = 10

ERROR_CURVES_PNG = "error_curves.png"
FINAL_ERROR_PNG = "final_error_by_depth.png"
INDEX_HTML = "index.html"


# ---------------------------------------------------------------- what the store holds


@dataclass
class Trial:
    run_id: str
    trial_id: str
    family: str
    depth: int | None
    shortcut: str
    lr: str
    status: str
    histories: dict[str, dict[int, float]]  # metric -> {epoch: value}

    @property
    def is_plain(self) -> bool:
        return self.shortcut == "none"

    @property
    def label(self) -> str:
        depth = "?" if self.depth is None else str(self.depth)
        return f"plain-{depth}" if self.is_plain else f"ResNet-{depth} ({self.shortcut})"

    @property
    def epochs_run(self) -> int:
        return max((max(h) for h in self.histories.values() if h), default=0)

    def final(self, metric: str) -> float | None:
        """The metric's value at the last epoch it was logged, or None."""
        history = self.histories.get(metric)
        return history[max(history)] if history else None

    def final_error_percent(self, accuracy_metric: str) -> float | None:
        accuracy = self.final(accuracy_metric)
        return None if accuracy is None else 100.0 * (1.0 - accuracy)

    def error_curve(self, accuracy_metric: str) -> tuple[list[int], list[float]]:
        history = self.histories.get(accuracy_metric, {})
        epochs = sorted(history)
        return epochs, [100.0 * (1.0 - history[e]) for e in epochs]

    def paper(self) -> PaperResult | None:
        return None if self.depth is None else paper_result(self.family, self.depth, self.shortcut)


@dataclass
class Sweep:
    run_id: str
    name: str
    experiment_id: str
    metric: str
    mode: str
    start_ms: int | None
    end_ms: int | None
    status: str
    tracking_uri: str
    trials: list[Trial]

    def ranked_trials(self) -> list[Trial]:
        """Best first by the sweep metric's final value; trials without it last."""
        sign = -1.0 if self.mode == "max" else 1.0
        return sorted(self.trials, key=lambda t: (t.final(self.metric) is None,
                                                  sign * (t.final(self.metric) or 0.0), t.trial_id))


# ---------------------------------------------------------------- reading the store


def open_store(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    location = _local_store_path(tracking_uri)
    if location is not None and not location.exists():
        raise InputError(f"no MLflow store at {location} (tracking URI {tracking_uri})")
    return MlflowClient(tracking_uri=tracking_uri)


def _local_store_path(tracking_uri: str) -> Path | None:
    """The file or folder a local tracking URI names; None for remote stores."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "":
        return Path(tracking_uri)
    return None


def _all_pages(fetch: Callable[[str | None], list]) -> Iterator:
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def _sweep_parent_runs(client) -> list:
    """Every sweep parent run in every active experiment, newest first."""
    experiment_ids = [e.experiment_id for e in _all_pages(
        lambda token: client.search_experiments(page_token=token))]
    if not experiment_ids:
        return []
    runs = list(_all_pages(lambda token: client.search_runs(
        experiment_ids, filter_string=f"tags.`{KIND_TAG}` = 'sweep'", page_token=token)))
    return sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)


def _sweep_name(run) -> str:
    return run.data.tags.get(SWEEP_TAG) or run.info.run_name or run.info.run_id


def find_sweep_run(client, sweep: str, tracking_uri: str):
    """The parent run with this run id, else the newest one with this sweep name."""
    parents = _sweep_parent_runs(client)
    for run in parents:
        if run.info.run_id == sweep:
            return run
    for run in parents:
        if _sweep_name(run) == sweep:
            return run
    raise InputError(_unknown_sweep_message(sweep, parents, tracking_uri))


def _unknown_sweep_message(sweep: str, parents: list, tracking_uri: str) -> str:
    names = list(dict.fromkeys(_sweep_name(run) for run in parents))
    if not names:
        return (f"no sweep {sweep!r}: no sweeps are recorded in {tracking_uri} "
                "(run `resplat tune` first)")
    listed = ", ".join(names[:MAX_LISTED_SWEEPS])
    more = f" and {len(names) - MAX_LISTED_SWEEPS} more" if len(names) > MAX_LISTED_SWEEPS else ""
    return f"no sweep named (or with run id) {sweep!r}; sweeps in {tracking_uri}: {listed}{more}"


def _metric_history(client, run_id: str, metric: str) -> dict[int, float]:
    """epoch -> value; if an epoch was logged twice the later value wins."""
    latest: dict[int, tuple[int, float]] = {}
    for point in client.get_metric_history(run_id, metric):
        if point.step not in latest or point.timestamp >= latest[point.step][0]:
            latest[point.step] = (point.timestamp, point.value)
    return {step: value for step, (_, value) in latest.items()}


def _parse_depth(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _trial_from_run(client, run, metrics: list[str]) -> Trial:
    params, tags = run.data.params, run.data.tags
    logged = [m for m in metrics if m in run.data.metrics]
    return Trial(
        run_id=run.info.run_id,
        trial_id=tags.get(TRIAL_TAG) or run.info.run_name or run.info.run_id[:8],
        family=params.get("model.family", "?"),
        depth=_parse_depth(params.get("model.depth")),
        shortcut=params.get("model.shortcut", "?"),
        lr=params.get("optim.lr", "?"),
        status=tags.get(TRIAL_STATUS_TAG) or run.info.status.lower(),
        histories={m: _metric_history(client, run.info.run_id, m) for m in logged},
    )


def _sweep_from_parent(client, parent, tracking_uri: str) -> Sweep:
    tags = parent.data.tags
    metric = tags.get(METRIC_TAG) or "val_top1"
    mode = tags.get(MODE_TAG) if tags.get(MODE_TAG) in ("max", "min") else "max"
    children = list(_all_pages(lambda token: client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        page_token=token)))
    wanted = list(dict.fromkeys([*CURVE_METRICS, metric]))
    return Sweep(
        run_id=parent.info.run_id,
        name=_sweep_name(parent),
        experiment_id=parent.info.experiment_id,
        metric=metric,
        mode=mode,
        start_ms=parent.info.start_time,
        end_ms=parent.info.end_time,
        status=parent.info.status.lower(),
        tracking_uri=tracking_uri,
        trials=[_trial_from_run(client, run, wanted) for run in children],
    )


def load_sweep(tracking_uri: str, sweep: str) -> Sweep:
    """Read a sweep and its trials (with per-epoch metrics) from the MLflow store."""
    from mlflow.exceptions import MlflowException

    client = open_store(tracking_uri)
    try:
        parent = find_sweep_run(client, sweep, tracking_uri)
        record = _sweep_from_parent(client, parent, tracking_uri)
    except MlflowException as e:
        raise ResplatError(f"cannot read the MLflow store {tracking_uri}: {e.message}") from e
    if not record.trials:
        raise InputError(f"sweep {record.name!r} (run {record.run_id}) has no trial runs yet; "
                         "nothing to report")
    return record


# ---------------------------------------------------------------- plots


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
    epochs, train_error = trial.error_curve("train_top1")
    if epochs:
        ax.plot(epochs, train_error, linestyle=linestyle, linewidth=0.9, color=colour, alpha=0.75)
    epochs, test_error = trial.error_curve("val_top1")
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


def _best_by_cell(trials: list[Trial]) -> dict[tuple[str, int, str], tuple[Trial, int]]:
    """(family, depth, shortcut) -> (the trial with the lowest final test error, trials there)."""
    cells: dict[tuple[str, int, str], list[Trial]] = {}
    for t in trials:
        if t.depth is not None and t.final("val_top1") is not None:
            cells.setdefault((t.family, t.depth, t.shortcut), []).append(t)
    return {key: (min(ts, key=lambda t: t.final_error_percent("val_top1")), len(ts))
            for key, ts in cells.items()}


def plot_final_errors(trials: list[Trial], path: Path) -> None:
    """Final test error against depth, one line per shortcut option; the paper's as hollow marks."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    best = _best_by_cell(trials)
    families = sorted({t.family for t in trials})
    depths = sorted({t.depth for t in trials if t.depth is not None})
    palette = colormaps["tab10"]
    figure = Figure(figsize=(6.4, 4.6), dpi=100, layout="constrained")
    ax = figure.subplots()
    for index, shortcut in enumerate(SHORTCUT_ORDER):
        style = {"color": palette(index), "marker": SHORTCUT_MARKERS.get(shortcut, "D")}
        name = "plain" if shortcut == "none" else f"ResNet ({shortcut})"
        ours = sorted((d, t.final_error_percent("val_top1")) for (f, d, s), (t, _) in best.items()
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


# ---------------------------------------------------------------- HTML


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _percent(value: float | None) -> str:
    return "&mdash;" if value is None else f"{value:.2f}"


def _accuracy_percent(value: float | None) -> str:
    return _percent(None if value is None else 100.0 * value)


def _when(ms: int | None) -> str:
    if ms is None:
        return "&mdash;"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _run_reference(sweep: Sweep, run_id: str) -> str:
    """A link into the MLflow UI when the store is a server, else the run id."""
    code = f"<code>{_e(run_id)}</code>"
    if urlparse(sweep.tracking_uri).scheme in ("http", "https"):
        url = f"{sweep.tracking_uri.rstrip('/')}/#/experiments/{sweep.experiment_id}/runs/{run_id}"
        return f'<a href="{_e(url)}">{code}</a>'
    return code


def _paper_text(result: PaperResult | None) -> str:
    if result is None:
        return ""
    top5 = "" if result.top5_error is None else f" / {result.top5_error:.2f}"
    return (f'<span class="paper" title="{_e(result.source)}">'
            f"paper {result.top1_error:.2f}{top5}</span>")


def _header_html(sweep: Sweep) -> str:
    rows = [
        ("sweep", _e(sweep.name)),
        ("parent run", _run_reference(sweep, sweep.run_id)),
        ("experiment", f"<code>{_e(sweep.experiment_id)}</code>"),
        ("ran", f"{_when(sweep.start_ms)} &rarr; {_when(sweep.end_ms)} ({_e(sweep.status)})"),
        ("metric", f"<code>{_e(sweep.metric)}</code> ({_e(sweep.mode)}, final epoch)"),
        ("trials", str(len(sweep.trials))),
        ("tracking URI", f"<code>{_e(sweep.tracking_uri)}</code>"),
    ]
    body = "\n".join(f"<tr><th>{key}</th><td>{value}</td></tr>" for key, value in rows)
    hint = ""
    if urlparse(sweep.tracking_uri).scheme not in ("http", "https"):
        hint = (f'<p class="note">Open the runs with <code>resplat ui</code>, then '
                f'<code>#/experiments/{_e(sweep.experiment_id)}/runs/RUN_ID</code>.</p>')
    return f'<table class="meta">\n{body}\n</table>\n{hint}'


def _grid_rows(trials: list[Trial]) -> list[tuple[str, int]]:
    return sorted({(t.family, t.depth) for t in trials if t.depth is not None})


def _grid_columns(trials: list[Trial], rows: list[tuple[str, int]]) -> list[str]:
    present = {t.shortcut for t in trials} | {s for f, d in rows for s in paper_shortcuts(f, d)}
    known = [s for s in SHORTCUT_ORDER if s in present]
    return known + sorted(present - set(SHORTCUT_ORDER))


def _grid_cell(best: dict, family: str, depth: int, shortcut: str) -> str:
    ours = best.get((family, depth, shortcut))
    paper = _paper_text(paper_result(family, depth, shortcut))
    if ours is None:
        return f'<td><span class="ours">&mdash;</span> {paper}</td>'
    trial, count = ours
    notes = [f"best of {count}"] if count > 1 else []
    if trial.status != "finished":
        notes.append(f"{trial.status.replace('_', ' ')} at epoch {trial.epochs_run}")
    noted = "".join(f' <span class="count">{_e(n)}</span>' for n in notes)
    return (f'<td><span class="ours" title="trial {_e(trial.trial_id)}">'
            f'{_percent(trial.final_error_percent("val_top1"))}</span>{noted} {paper}</td>')


def _grid_html(trials: list[Trial]) -> str:
    rows = _grid_rows(trials)
    if not rows:
        return '<p class="note">No trial records its depth (param <code>model.depth</code>).</p>'
    columns = _grid_columns(trials, rows)
    best = _best_by_cell(trials)
    show_family = len({f for f, _ in rows}) > 1
    head = "".join(f"<th>{'plain' if s == 'none' else _e(s)}</th>" for s in columns)
    body = []
    for family, depth in rows:
        row_label = f"{_e(family)} {depth}" if show_family else str(depth)
        cells = "".join(_grid_cell(best, family, depth, s) for s in columns)
        body.append(f"<tr><th>{row_label}</th>{cells}</tr>")
    rows_html = "\n".join(body)
    return f'<table class="grid">\n<tr><th>depth</th>{head}</tr>\n{rows_html}\n</table>'


def _ranked_html(sweep: Sweep) -> str:
    extra_metric = sweep.metric not in ("val_top1", "val_top5")
    head = ["#", "trial", "depth", "shortcut", "lr", "epochs", "status", "val top-1 (%)",
            "val top-5 (%)", "train error (%)"]
    head += [_e(sweep.metric)] if extra_metric else []
    head += ["paper top-1 / top-5 error (%)", "MLflow run"]
    body = []
    for rank, t in enumerate(sweep.ranked_trials(), start=1):
        cells = [str(rank), _e(t.trial_id), _e("?" if t.depth is None else t.depth),
                 _e("plain" if t.is_plain else t.shortcut), _e(t.lr), str(t.epochs_run),
                 f'<span class="status-{_e(t.status)}">{_e(t.status)}</span>',
                 _accuracy_percent(t.final("val_top1")), _accuracy_percent(t.final("val_top5")),
                 _percent(t.final_error_percent("train_top1"))]
        if extra_metric:
            value = t.final(sweep.metric)
            cells.append("&mdash;" if value is None else f"{value:.4g}")
        cells += [_paper_text(t.paper()), _run_reference(sweep, t.run_id)]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="ranked">\n<tr>{header}</tr>\n' + "\n".join(body) + "\n</table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th { background: #f4f4f4; } table.meta th, table.meta td { text-align: left; }
.paper { color: #777; font-size: 0.85em; } .count { color: #777; font-size: 0.8em; }
.ours { font-weight: 600; } .note { color: #555; max-width: 60em; }
.status-stopped_early { color: #a60; } .status-failed { color: #b00; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def render_html(sweep: Sweep) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>resplat sweep {_e(sweep.name)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Sweep {_e(sweep.name)}</h1>
{_header_html(sweep)}

<h2>Error curves</h2>
<p class="note">Like Figure 6 of He et al. 2015: error in % against epochs, one colour per depth.
Thin lines are the training error (1 &minus; training top-1 over each epoch), bold lines the test
error (1 &minus; validation top-1). Plain nets (no shortcuts) are dashed in the left panel, residual
nets solid in the right panel; markers tell shortcut options apart
(&#9679; A, &#9632; B, &#9650; C).
Trials stopped early by ASHA end where they were stopped.</p>
<img src="{ERROR_CURVES_PNG}" alt="training and test error against epochs">

<h2>Final test error by depth and shortcut</h2>
<p class="note">Our final test top-1 error in % (validation top-1 at each trial's last epoch; the
best trial where several share a cell), with the paper's number beside it in grey: CIFAR-10 from
Table 6 (ResNets with option A), ImageNet top-1 / top-5 from Tables 2 and 3 (10-crop testing, so
expect ours, usually single-crop, to be somewhat higher). Hover a paper number for its source.</p>
{_grid_html(sweep.trials)}
<img src="{FINAL_ERROR_PNG}" alt="final test error against depth">

<h2>Trials ranked by {_e(sweep.metric)} ({_e(sweep.mode)})</h2>
{_ranked_html(sweep)}

<p class="note">Generated by <code>resplat report</code> at {generated}.</p>
</body>
</html>
"""


# ---------------------------------------------------------------- writing it


def _check_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder")


def _publish(staging: Path, out_dir: Path) -> None:
    """Move the finished report into place; index.html last so it never points at missing plots."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    for file in sorted(staging.iterdir(), key=lambda p: p.name == INDEX_HTML):
        os.replace(file, out_dir / file.name)


def write_report(sweep: Sweep, folder: Path) -> None:
    plot_error_curves(sweep.trials, folder / ERROR_CURVES_PNG)
    plot_final_errors(sweep.trials, folder / FINAL_ERROR_PNG)
    (folder / INDEX_HTML).write_text(render_html(sweep), encoding="utf-8")


def build_report(tracking_uri: str, sweep: str, out_dir: Path) -> Path:
    """Write the report of `sweep` (a parent run id or sweep name) into out_dir; return index.html.

    Everything is written to a hidden staging folder beside out_dir and moved into place at the
    end, so a failure leaves out_dir as it was.
    """
    out_dir = Path(out_dir)
    _check_output_dir(out_dir)
    record = load_sweep(tracking_uri, sweep)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; it may become out_dir itself
        write_report(record, staging)
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / INDEX_HTML

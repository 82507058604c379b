"""The sweep report's HTML page: the sweep, its plots, the paper's grid and the ranked trials."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from urllib.parse import urlparse

from resplat.paper import PaperResult, paper_result, paper_shortcuts
from resplat.report.plots import SHORTCUT_ORDER, best_by_cell
from resplat.tracking.names import TRAIN_TOP1_METRIC, VAL_TOP1_METRIC, VAL_TOP5_METRIC
from resplat.tracking.sweeps import Sweep, Trial

ERROR_CURVES_PNG = "error_curves.png"
FINAL_ERROR_PNG = "final_error_by_depth.png"
INDEX_HTML = "index.html"


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
            f'{_percent(trial.final_error_percent(VAL_TOP1_METRIC))}</span>{noted} {paper}</td>')


def _grid_html(trials: list[Trial]) -> str:
    rows = _grid_rows(trials)
    if not rows:
        return '<p class="note">No trial records its depth (param <code>model.depth</code>).</p>'
    columns = _grid_columns(trials, rows)
    best = best_by_cell(trials)
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
    extra_metric = sweep.metric not in (VAL_TOP1_METRIC, VAL_TOP5_METRIC)
    head = ["#", "trial", "depth", "shortcut", "lr", "epochs", "status", "val top-1 (%)",
            "val top-5 (%)", "train error (%)"]
    head += [_e(sweep.metric)] if extra_metric else []
    head += ["paper top-1 / top-5 error (%)", "MLflow run"]
    body = []
    for rank, t in enumerate(sweep.ranked_trials(), start=1):
        cells = [str(rank), _e(t.trial_id), _e("?" if t.depth is None else t.depth),
                 _e("plain" if t.is_plain else t.shortcut), _e(t.lr), str(t.epochs_run),
                 f'<span class="status-{_e(t.status)}">{_e(t.status)}</span>',
                 _accuracy_percent(t.final(VAL_TOP1_METRIC)), _accuracy_percent(t.final(VAL_TOP5_METRIC)),
                 _percent(t.final_error_percent(TRAIN_TOP1_METRIC))]
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

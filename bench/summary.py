"""Rewrite the "Latest results" section of bench/README.md from the records under bench/results/:
per benchmark, its latest full (non-quick) run beside the goal. The history stays in the JSON files.

    .venv/bin/python bench/summary.py          # `make bench` runs it last
"""

from __future__ import annotations

import json
import re
from pathlib import Path

BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
BEGIN, END = "<!-- latest results: written by bench/summary.py -->", "<!-- end of latest results -->"


def latest(name: str) -> dict | None:
    path = BENCH / "results" / f"{name}.json"
    if not path.exists():
        return None
    full = [entry for entry in json.loads(path.read_text()) if not entry["figures"].get("quick")]
    return full[-1] if full else None


def _load(entry: dict) -> str:
    load = entry["load"]
    share = load.get("other_processes_cpu_share")
    before, after = load["load_average_1min_before_after"]
    return f"load {before:g}->{after:g}" + (f", others {share:.0%} CPU" if share is not None else "")


def _when(entry: dict) -> str:
    return f"{entry['date']}, {entry['commit']}, {_load(entry)}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def loader_section() -> list[str]:
    text = (BENCH / "results" / "loader.md").read_text() if (BENCH / "results" / "loader.md").exists() else ""
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    if len(sections) < 2:
        return ["No run recorded."]
    last = sections[-1].splitlines()
    rows = [line for line in last if line.startswith("|")]
    return [f"Run of {last[0].strip()} (`results/loader.md`); goal at 224 px (issue 14): >= 5x torchvision.",
            "", *rows]


def overhead_section() -> list[str]:
    e = latest("overhead")
    if e is None:
        return ["No full run recorded."]
    f = e["figures"]
    bare = sum(f["bare_images_per_sec_before_after"]) / 2
    return [f"{e['reading']}.", "", *table(
        ["run", "resplat img/s (steady epochs)", "bare loop img/s (before, after)",
         "bare loop fed by the FFCV loader", "ratio", "goal"],
        [[_when(e), f"{f['resplat_steady_images_per_sec']:,.0f}",
          f"{bare:,.0f} ({', '.join(f'{v:,.0f}' for v in f['bare_images_per_sec_before_after'])})",
          f"{f['bare_fed_by_ffcv_loader_images_per_sec']:,.0f}" if "bare_fed_by_ffcv_loader_images_per_sec" in f
          else "-", f"{f['ratio']:.1%}", f["goal"]]])]


def first_step_section() -> list[str]:
    e = latest("first_step")
    if e is None:
        return ["No full run recorded."]
    f = e["figures"]
    rows = []
    for kind in ("warm", "cold"):
        if kind in f:
            phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in f[kind]["phases_s"].items())
            rows.append([kind, f"{f[kind]['seconds_to_first_step']:.1f} s", phases,
                         f"< {f['goal_warm_s']:.0f} s" if kind == "warm" else "-"])
    return [f"{e['reading']}. Run: {_when(e)}.", "", *table(["", "to first step", "phases (s)", "goal"], rows)]


def sweep_section() -> list[str]:
    e = latest("sweep_startup")
    if e is None:
        return ["No full run recorded."]
    f = e["figures"]
    return [f"{e['reading']}.", "", *table(
        ["run", "N", "training alone", "sweep wall", "fixed cost per trial", "of a 2-min trial", "goal"],
        [[_when(e), str(f["trials"]), f"{f['training_alone_s']:.1f} s", f"{f['sweep_wall_s']:.1f} s",
          f"{f['fixed_cost_per_trial_s']:.1f} s", f"{f['overhead_on_two_minute_trials']:.0%}", f["goal"]]])]


def time_to_accuracy_section() -> list[str]:
    e = latest("time_to_accuracy")
    if e is None:
        return ["No full run recorded."]
    f = e["figures"]
    rows = [[name, f"{minutes:.1f} min" if minutes is not None else "not reached",
             f"{f['in_quickstart_epochs'][name]:.1f}" if minutes is not None else "-"]
            for name, minutes in f["minutes_to"].items()]
    curve = ", ".join(f"{epoch['epoch']}: {epoch['val_top1']:.1%} at {epoch['minutes']:.1f} min"
                      for epoch in f["curve"])
    return [(f"{e['reading']}. Run: {_when(e)}; {f['precision']}, batch {f['batch_size']}, {f['epochs']} epochs. "
            f"Goal: {f['goal']}."), "",
            *table(["test top-1", "training time", "in quickstart epochs"], rows), "",
            f"Per epoch (test top-1 at minutes of training): {curve}."]


def gpu_section() -> list[str]:
    e = latest("gpu")
    if e is None:
        return ["No full run recorded."]
    f = e["figures"]
    submit = "-" if not f.get("submit") else f"exit {f['submit']['exit_code']}"
    return [f"{e['reading']}.", "", *table(
        ["run", "device", "img/s", "in the model", "vs anchor", "resplat submit on GPU", "anchor"],
        [[_when(e), f["device"], f"{f['images_per_sec']:,.0f}", f"{f['model_time_fraction']:.0%}",
          f"{f['ratio_to_ffcv_anchor']:.2f}x", submit, f["anchor"]]])]


def render() -> str:
    parts = [BEGIN, ""]
    for title, section in (("Loader (`loader.py`)", loader_section),
                           ("Platform overhead (`overhead.py`)", overhead_section),
                           ("Submit to first step (`first_step.py`)", first_step_section),
                           ("Sweep start-up (`sweep_startup.py`)", sweep_section),
                           ("Time to accuracy (`time_to_accuracy.py`)", time_to_accuracy_section),
                           ("ResNet-50 on a GPU (`gpu.py`)", gpu_section)):
        parts += [f"### {title}", "", *section(), ""]
    return "\n".join([*parts, END])


def main() -> None:
    text = README.read_text()
    block = render()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Latest results\n\n" + block + "\n"
    README.write_text(text)
    print(f"updated {README}")


if __name__ == "__main__":
    main()

"""Writes the Grafana dashboards in dashboards/grafana/ from the metric names in resplat.orchestrate.metrics.

    .venv/bin/python dashboards/build.py          # rewrite the JSON files
    .venv/bin/python dashboards/build.py --check  # exit 1 when a file is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from resplat.orchestrate import metrics as m

GRAFANA = Path(__file__).resolve().parent / "grafana"
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TRAIN = 'job=~"$job", run=~"$run", worker=~"$worker"'
RUN = 'job=~"$job", run=~"$run"'


def datasource_variable() -> dict:
    return {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []}


def query_variable(name: str, query: str, *, label: str, multi: bool = False, include_all: bool = False) -> dict:
    return {
        "type": "query", "name": name, "label": label, "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"}, "definition": query,
        "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all,
        **({"allValue": ".*"} if include_all else {}), "current": {}, "hide": 0, "options": [], "regex": "",
    }


class Layout:
    """Places rows and panels on Grafana's 24-column grid and numbers them."""

    def __init__(self):
        self.panels: list[dict] = []
        self.y = 0
        self.x = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        self.y += 8 if self.x else 0
        self.x = 0
        self.panels.append({"id": self._next_id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def panel(self, title: str, description: str, targets: list[tuple[str, str]], *, unit: str = "short",
              kind: str = "timeseries", width: int = 12) -> None:
        if self.x + width > 24:
            self.x, self.y = 0, self.y + 8
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "none"}}
        if kind == "stat":
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "colorMode": "value", "graphMode": "none", "textMode": "auto"}
        self.panels.append({
            "id": self._next_id(), "type": kind, "title": title, "description": description,
            "datasource": DATASOURCE, "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": options,
            "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                        for i, (expr, legend) in enumerate(targets)],
        })
        self.x += width


def dashboard(uid: str, title: str, description: str, variables: list[dict], layout: Layout) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["resplat"],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
        "time": {"from": "now-3h", "to": "now"}, "refresh": "10s", "timezone": "",
        "templating": {"list": variables}, "annotations": {"list": []}, "links": [],
        "panels": layout.panels,
    }


def training() -> dict:
    n = {metric: metric.exported for metric in m.TRAIN_METRICS}
    p = Layout()
    p.row("Throughput")
    p.panel("Images/s per worker", "Training images per second of each worker, over its epoch so far.",
            [(f"{n[m.IMAGES_PER_SECOND]}{{{TRAIN}}}", "{{run}} worker {{worker}}")])
    p.panel("Images/s, all workers", "The job's training throughput: the sum over its workers.",
            [(f"sum by (job, run) ({n[m.IMAGES_PER_SECOND]}{{{TRAIN}}})", "{{job}} {{run}}")])
    p.panel("Step time", "Mean wall time of one optimiser step on each worker.",
            [(f"{n[m.STEP_SECONDS]}{{{TRAIN}}}", "{{run}} worker {{worker}}")], unit="s")
    p.panel("Epoch", "Current epoch of the run.",
            [(f"max by (run) ({n[m.EPOCH]}{{{RUN}}})", "{{run}}")], kind="stat", width=6)
    p.panel("Step", "Optimiser steps done since the start of the run.",
            [(f"max by (run) ({n[m.STEP]}{{{RUN}}})", "{{run}}")], kind="stat", width=6)
    p.row("Loss and accuracy")
    p.panel("Train loss", "Loss of the latest batch on each worker.",
            [(f"{n[m.LOSS]}{{{TRAIN}}}", "{{run}} worker {{worker}}")])
    p.panel("Validation accuracy", "Top-1 and top-5 accuracy on the validation set after each epoch.",
            [(f"max by (run) ({n[m.VAL_TOP1]}{{{RUN}}})", "{{run}} top-1"),
             (f"max by (run) ({n[m.VAL_TOP5]}{{{RUN}}})", "{{run}} top-5")], unit="percentunit")
    p.panel("Validation loss", "Validation loss after each epoch.",
            [(f"max by (run) ({n[m.VAL_LOSS]}{{{RUN}}})", "{{run}}")])
    p.panel("Learning rate", "The schedule's current learning rate.",
            [(f"max by (run) ({n[m.LEARNING_RATE]}{{{RUN}}})", "{{run}}")])
    p.row("Data loading")
    p.panel("Waiting for data", "Share of each worker's step time spent waiting for the FFCV loader: "
            "near 0 means the model is the bottleneck, near 1 the data pipeline.",
            [(f"{n[m.DATA_WAIT_RATIO]}{{{TRAIN}}}", "{{run}} worker {{worker}}")], unit="percentunit")
    p.panel("Step time: data vs compute", "Each worker's step time split into waiting for data and the rest.",
            [(f"{n[m.STEP_SECONDS]}{{{TRAIN}}} * {n[m.DATA_WAIT_RATIO]}{{{TRAIN}}}", "worker {{worker}} data"),
             (f"{n[m.STEP_SECONDS]}{{{TRAIN}}} * (1 - {n[m.DATA_WAIT_RATIO]}{{{TRAIN}}})",
              "worker {{worker}} compute")], unit="s")
    p.row("Checkpoints and restarts")
    p.panel("Checkpoint duration", "Wall time of the latest checkpoint: saving it and reporting it to Ray Train.",
            [(f"max by (run) ({n[m.CHECKPOINT_SECONDS]}{{{RUN}}})", "{{run}}")], unit="s")
    p.panel("Checkpoint size", "Size of the latest checkpoint.",
            [(f"max by (run) ({n[m.CHECKPOINT_BYTES]}{{{RUN}}})", "{{run}}")], unit="bytes")
    p.panel("Checkpoints saved", "Checkpoints saved by the current worker group.",
            [(f"sum by (run) ({n[m.CHECKPOINTS]}{{{RUN}}})", "{{run}}")], kind="stat", width=6)
    p.panel("Restarts", "Worker-group restarts of the run so far (a dead worker or node replaced).",
            [(f"max by (run) ({n[m.RESTARTS]}{{{RUN}}})", "{{run}}")], kind="stat", width=6)
    p.panel("Preemptions", "Preemption notices the run has received so far.",
            [(f"max by (run) ({n[m.PREEMPTIONS]}{{{RUN}}})", "{{run}}")], kind="stat", width=6)
    p.panel("Steps lost to restarts", "Steps trained and then redone after restarts (work since the "
            "checkpoint a restart went back to).",
            [(f"max by (run) ({n[m.LOST_STEPS]}{{{RUN}}})", "{{run}}")], kind="stat", width=6)
    p.row("GPU")
    p.panel("GPU memory allocated", "Memory held by tensors on each worker's GPU (GPU workers only).",
            [(f"{n[m.GPU_MEMORY_BYTES]}{{{TRAIN}}}", "{{run}} worker {{worker}}")], unit="bytes")
    p.panel("GPU utilisation", "Utilisation of each node's GPUs, from Ray's node metrics (GPU nodes only).",
            [("ray_node_gpus_utilization", "{{ip}} GPU {{GpuIndex}}")], unit="percent")
    variables = [
        datasource_variable(),
        query_variable("job", f"label_values({m.EPOCH.exported}, job)", label="Job"),
        query_variable("run", f'label_values({m.EPOCH.exported}{{job=~"$job"}}, run)', label="Run",
                       multi=True, include_all=True),
        query_variable("worker", f'label_values({m.EPOCH.exported}{{job=~"$job", run=~"$run"}}, worker)',
                       label="Worker", multi=True, include_all=True),
    ]
    return dashboard("resplat-training", "resplat: training", "One resplat job's runs while they train.",
                     variables, p)


def sweeps() -> dict:
    trials = m.SWEEP_TRIALS.exported
    p = Layout()
    p.row("Trials")
    for state in ("running", "finished", "stopped", "errored"):
        p.panel(f"Trials {state}", f"Trials of the sweep that are {state}"
                + (" (stopped early by the scheduler)" if state == "stopped" else "") + ".",
                [(f'sum({trials}{{sweep=~"$sweep", state="{state}"}})', state)], kind="stat", width=6)
    p.panel("Trials by state", "How the sweep's trials move from pending to running to finished or stopped.",
            [(f'sum by (state) ({trials}{{sweep=~"$sweep"}})', "{{state}}")], width=24)
    p.row("Per trial")
    per_trial = 'job=~"$job"'
    p.panel("Validation top-1 per trial", "Each trial's validation top-1 after each epoch.",
            [(f"max by (trial) ({m.VAL_TOP1.exported}{{{per_trial}}})", "{{trial}}")], unit="percentunit")
    p.panel("Train loss per trial", "Each trial's training loss, averaged over its workers.",
            [(f"avg by (trial) ({m.LOSS.exported}{{{per_trial}}})", "{{trial}}")])
    p.panel("Epoch per trial", "How far each trial has got.",
            [(f"max by (trial) ({m.EPOCH.exported}{{{per_trial}}})", "{{trial}}")])
    p.panel("Images/s per trial", "Each trial's throughput, summed over its workers.",
            [(f"sum by (trial) ({m.IMAGES_PER_SECOND.exported}{{{per_trial}}})", "{{trial}}")])
    variables = [
        datasource_variable(),
        query_variable("sweep", f"label_values({trials}, sweep)", label="Sweep"),
        query_variable("job", f"label_values({m.EPOCH.exported}, job)", label="Job of the trials"),
    ]
    return dashboard("resplat-sweeps", "resplat: sweeps", "A Ray Tune sweep at a glance.", variables, p)


def cluster() -> dict:
    node = 'ip=~"$node"'
    p = Layout()
    p.row("Nodes")
    p.panel("Active nodes", "Nodes in the cluster, by node type (from the autoscaler).",
            [("sum by (NodeType) (ray_cluster_active_nodes)", "{{NodeType}}")], kind="stat", width=6)
    p.panel("CPUs", "Logical CPUs in use and in all.",
            [('sum by (State) (ray_resources{Name="CPU"})', "{{State}}")], kind="stat", width=6)
    p.panel("Actors", "Ray actors by state (Ray Train workers and controllers among them).",
            [("sum by (State) (ray_actors)", "{{State}}")], kind="stat", width=6)
    p.panel("Tasks", "Ray tasks by state.",
            [("sum by (State) (ray_tasks)", "{{State}}")], kind="stat", width=6)
    p.panel("CPU utilisation per node", "CPU utilisation of each node.",
            [(f"ray_node_cpu_utilization{{{node}}}", "{{ip}}")], unit="percent")
    p.panel("Memory used per node", "Memory used on each node.",
            [(f"ray_node_mem_used{{{node}}}", "{{ip}}")], unit="bytes")
    p.panel("Network received per node", "Bytes per second received by each node.",
            [(f"ray_node_network_receive_speed{{{node}}}", "{{ip}}")], unit="Bps")
    p.panel("Disk used per node", "Disk space used on each node.",
            [(f"ray_node_disk_usage{{{node}}}", "{{ip}}")], unit="bytes")
    p.row("GPU")
    p.panel("GPU utilisation per node", "Utilisation of each GPU (GPU nodes only).",
            [(f"ray_node_gpus_utilization{{{node}}}", "{{ip}} GPU {{GpuIndex}}")], unit="percent")
    p.panel("GPU memory used per node", "GPU memory used on each node (GPU nodes only).",
            [(f"ray_node_gram_used{{{node}}}", "{{ip}} GPU {{GpuIndex}}")], unit="decmbytes")
    variables = [
        datasource_variable(),
        query_variable("node", "label_values(ray_node_cpu_utilization, ip)", label="Node", multi=True,
                       include_all=True),
    ]
    return dashboard("resplat-cluster", "resplat: cluster", "The Ray cluster's nodes and resources.", variables, p)


DASHBOARDS = {"training.json": training, "sweeps.json": sweeps, "cluster.json": cluster}


def render(build) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name, build in DASHBOARDS.items():
        path = GRAFANA / name
        text = render(build)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run: .venv/bin/python dashboards/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

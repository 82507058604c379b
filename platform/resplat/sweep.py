"""The sweep space spec: which job fields `resplat tune` varies, how, and how trials are judged.

    sweep = load_space("shortcuts", overrides=["schedule.epochs=2"])
    sweep.space.params["model.shortcut"].values()   # ["A", "B", "C", "none"]

Loading never starts or writes anything: every param path must name a job field, and every
value a trial could take (each grid/choice value, both bounds of each range) must make a
valid job when applied to the base job; all problems are collected into one SpecError.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from resplat import paths
from resplat.errors import InputError, SpecError
from resplat.spec import (
    JobSpec,
    apply_overrides,
    describe_errors,
    expand_variables,
    read_yaml,
    unknown_field,
)

# What every epoch reports (resplat.train): a sweep can only rank trials by one of these.
EPOCH_METRICS = ("val_top1", "val_top5", "val_loss", "train_loss", "train_top1", "train_images_per_sec", "lr")

# Strict: a bound written as a string ("0.1") is a mistake worth reporting, not coercing.
Bound = Annotated[float, Field(strict=True)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Section):
    """Exactly one of grid, choice, uniform, loguniform."""

    grid: list[Any] | None = Field(None, min_length=1, description="Try every value (each `samples` times).")
    choice: list[Any] | None = Field(None, min_length=1, description="Sample one value per trial.")
    uniform: tuple[Bound, Bound] | None = Field(None, description="[low, high]: sample uniformly.")
    loguniform: tuple[Bound, Bound] | None = Field(
        None, description="[low, high], low > 0: sample uniformly in log space."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [kind for kind in ("grid", "choice", "uniform", "loguniform") if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid, choice, uniform, loguniform (got {given or 'none'})")
        low_high = self.uniform or self.loguniform
        if low_high is not None:
            low, high = low_high
            if not low < high:
                raise ValueError(f"bounds must have low < high (got [{low}, {high}])")
            if self.loguniform is not None and low <= 0:
                raise ValueError(f"loguniform needs low > 0 (got {low})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None)

    def candidates(self) -> list[Any]:
        """The values to check against the job spec: every listed value, or both bounds."""
        return list(getattr(self, self.kind))

    def to_tune(self):
        from ray import tune

        values = getattr(self, self.kind)
        return {
            "grid": tune.grid_search, "choice": tune.choice,
            "uniform": lambda b: tune.uniform(*b), "loguniform": lambda b: tune.loguniform(*b),
        }[self.kind](list(values))


class SchedulerSpec(_Section):
    """Which Tune scheduler decides when trials stop."""

    kind: Literal["asha", "fifo"] = Field(
        "asha", description="asha: stop weak trials early; fifo: run every trial to the end (comparisons)."
    )
    grace_period: int = Field(1, ge=1, description="asha: epochs every trial runs before it may be stopped.")
    reduction_factor: int = Field(2, ge=2, description="asha: keep 1 in this many trials at each rung.")


class SweepSpace(_Section):
    """A resplat sweep: a base job and the fields to vary."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Sweep name (letters, digits, . _ -).")
    base_job: Path = Field(description="The job every trial starts from (a relative path is relative to the "
                           "space file's folder).")
    params: dict[str, Distribution] = Field(
        min_length=1, description="Dotted job field path -> {grid|choice: [..]} or {uniform|loguniform: [lo, hi]}."
    )
    samples: int = Field(1, ge=1, description="Trials per grid point (or in all, without grids).")
    metric: Literal[EPOCH_METRICS] = Field("val_top1", description="The per-epoch metric that ranks trials.")
    mode: Literal["max", "min"] = Field("max", description="Whether a higher or lower metric is better.")
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    max_concurrent: int = Field(1, ge=1, description="Trials running at the same time.")
    overrides: list[str] = Field(
        default_factory=list, description="`a.b=value` applied to the base job of every trial."
    )

    def tune_param_space(self) -> dict[str, Any]:
        return {path: dist.to_tune() for path, dist in self.params.items()}

    def max_epochs(self, base: JobSpec) -> int:
        """The longest a trial can run (schedule.epochs may itself be a param)."""
        dist = self.params.get("schedule.epochs")
        return int(max(dist.candidates())) if dist else base.schedule.epochs


@dataclass
class LoadedSweep:
    space: SweepSpace
    source: Path
    text: str  # the space file as written
    base_spec: JobSpec  # base job with the space's and the command line's overrides
    base_raw: dict  # the same, before validation: trials apply their values to this


def resolve_space_path(name_or_path: str | Path) -> Path:
    """A bare name is a space in ./jobs/spaces or the shipped jobs/spaces; anything with a suffix or a
    slash is a path. An unknown name is an InputError that lists the known ones."""
    text = str(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")):
        return Path(text)
    for folder in paths.spaces_dirs():
        if (folder / f"{text}.yaml").is_file():
            return folder / f"{text}.yaml"
    raise InputError(f"--space {text}: no such sweep space; known: {', '.join(known_spaces()) or 'none'} "
                     "(or give a path to a space YAML file)")


def known_spaces() -> list[str]:
    return sorted({p.stem for folder in paths.spaces_dirs() for p in folder.glob("*.yaml")})


def load_space(name_or_path: str | Path, job_override: Path | None = None,
               overrides: list[str] = ()) -> LoadedSweep:
    """Read and check a sweep space and its base job; raise one SpecError per file."""
    source = resolve_space_path(name_or_path)
    raw_space = read_yaml(source)
    problems = _unknown_params(raw_space.get("params"))
    try:
        space = SweepSpace.model_validate(raw_space)
    except ValidationError as e:
        problems += describe_errors(e, SweepSpace)
    if problems:
        raise SpecError(str(source), problems)
    job_path = Path(job_override) if job_override is not None else Path(os.path.normpath(source.parent / space.base_job))
    base_raw = _base_job_raw(job_path, [*space.overrides, *overrides])
    base_spec = validate_trial(base_raw, {}, str(job_path))
    problems = _rejected_values(space, base_raw)
    if problems:
        raise SpecError(str(source), problems)
    return LoadedSweep(space=space, source=source, text=source.read_text(), base_spec=base_spec, base_raw=base_raw)


def _unknown_params(params: Any) -> list[str]:
    """`params.<path>: unknown field; did you mean ...` for each path that is not a job field."""
    if not isinstance(params, dict):
        return []
    found = (unknown_field(JobSpec, str(path).split(".")) for path in params)
    return [f"params.{problem}" for problem in found if problem]


def _base_job_raw(job_path: Path, overrides: list[str]) -> dict:
    raw = read_yaml(job_path)
    problems = apply_overrides(raw, list(overrides))
    raw, var_problems = expand_variables(raw)
    if problems or var_problems:
        raise SpecError(str(job_path), problems + var_problems)
    return raw


def with_values(base_raw: dict, values: dict[str, Any]) -> dict:
    """A copy of `base_raw` with each dotted path set to its value."""
    raw = copy.deepcopy(base_raw)
    for path, value in values.items():
        *sections, leaf = path.split(".")
        node = raw
        for part in sections:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return raw


def validate_trial(base_raw: dict, values: dict[str, Any], source: str) -> JobSpec:
    """The job a trial with these values runs, or a SpecError."""
    try:
        return JobSpec.model_validate(with_values(base_raw, values))
    except ValidationError as e:
        raise SpecError(source, describe_errors(e, JobSpec)) from None


def _rejected_values(space: SweepSpace, base_raw: dict) -> list[str]:
    """One line per param value the base job would reject (values checked one param at a time)."""
    problems = []
    for path, dist in space.params.items():
        for value in dist.candidates():
            try:
                JobSpec.model_validate(with_values(base_raw, {path: value}))
            except ValidationError as e:
                reasons = "; ".join(describe_errors(e, JobSpec))
                problems.append(f"params.{path}: {dist.kind} value {value!r} is rejected by the job: {reasons}")
    return problems


__all__ = ["Distribution", "LoadedSweep", "SchedulerSpec", "SweepSpace", "known_spaces", "load_space",
           "resolve_space_path",
           "validate_trial", "with_values"]

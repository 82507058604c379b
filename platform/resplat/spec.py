"""The job spec: one pydantic model per YAML section, and how a YAML file becomes one.

    spec = load_job("jobs/cifar10-resnet20.yaml", overrides=["optim.lr=0.2"])

Loading never starts or writes anything; every problem is collected into one
SpecError that names the file, the field path and what is allowed.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from resplat import paths
from resplat.errors import SpecError
from resplat.models import check_architecture

# Validation context key: the data paths are checked on the cluster the job runs on, not here.
PATHS_ELSEWHERE = "paths_elsewhere"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class ModelSpec(Section):
    """Which member of the ResNet family to train."""

    family: Literal["cifar", "imagenet"] = Field(
        "cifar", description="cifar: 6n+2 layers on 32x32 input; imagenet: 18/34/50/101/152."
    )
    depth: int = Field(20, description="Number of weighted layers (cifar: 6n+2; imagenet: 18, 34, 50, 101, 152).")
    shortcut: Literal["A", "B", "C", "none"] | None = Field(
        None,
        description="A: zero-padded identity; B: projection where shape changes; C: projection "
        "everywhere; none: plain net. Default: A for cifar, B for imagenet (as in the paper).",
    )
    num_classes: int = Field(10, gt=1, description="Number of output classes; must match the data.")
    bottleneck_stride: Literal["3x3", "1x1"] = Field(
        "3x3", description="Where a downsampling bottleneck strides: 3x3 (ResNet v1.5) or 1x1 (paper)."
    )
    zero_init_residual: bool = Field(False, description="Zero-init the last BN of each residual branch.")

    @model_validator(mode="after")
    def _known_architecture(self) -> ModelSpec:
        if self.shortcut is None:
            self.shortcut = "A" if self.family == "cifar" else "B"
        try:
            check_architecture(self.family, self.depth, self.shortcut, self.bottleneck_stride)
        except ValueError as e:
            raise ValueError(str(e)) from None
        if self.zero_init_residual and self.shortcut == "none":
            raise ValueError("zero_init_residual needs a shortcut: a plain net's blocks would output zeros")
        return self


class PrepareSpec(Section):
    """How an image-folder source is written to a .beton (ignored for .beton sources)."""

    storage: Literal["auto", "raw", "jpeg", "proportional"] = Field(
        "auto", description="Pixel storage; auto = raw for images of 64 px or less, else jpeg."
    )
    max_resolution: int | None = Field(None, gt=0, description="Cap on the longest side, in pixels.")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality when storing JPEG.")
    compress_probability: float = Field(0.5, ge=0, le=1, description="JPEG share for proportional storage.")


class DataSpec(Section):
    """Where the images come from and how they are fed to each worker."""

    train: Path = Field(description="Training set: an image folder (class sub-folders) or a .beton file.")
    val: Path = Field(description="Validation set: an image folder or a .beton file.")
    pipeline: Literal["cifar", "imagenet"] = Field(
        "cifar", description="cifar: pad 4 + random crop + flip; imagenet: random resized crop + flip."
    )
    resolution: int = Field(32, gt=0, description="Side of the square images fed to the model.")
    loader_workers: int = Field(2, ge=1, description="FFCV decoding threads per training worker.")
    order: Literal["random", "quasi_random"] | None = Field(
        None, description="Training sample order; default random (quasi_random for data larger than memory)."
    )
    os_cache: bool | None = Field(None, description="Keep the .beton in the page cache; default by size vs memory.")
    prepare: PrepareSpec = Field(default_factory=PrepareSpec, description="Writing options for folders.")

    @field_validator("train", "val")
    @classmethod
    def _source_exists(cls, path: Path, info: ValidationInfo) -> Path:
        if (info.context or {}).get(PATHS_ELSEWHERE):
            return path.expanduser()  # they name files on a cluster: checked where the job runs
        path = path.expanduser().absolute()
        if not path.exists():
            if path.is_relative_to(paths.datasets_dir() / "cifar10"):
                raise ValueError(f"{path} does not exist; make it with `resplat data cifar10`")
            raise ValueError(f"{path} does not exist (give an image folder or a .beton file)")
        if path.is_file() and path.suffix != ".beton":
            raise ValueError(f"{path} is a file but not a .beton (give an image folder or a .beton file)")
        return path


class OptimSpec(Section):
    """SGD with momentum, as in the paper."""

    lr: float = Field(0.1, gt=0, description="Peak learning rate (before lr_scaling).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum.")
    weight_decay: float = Field(1e-4, ge=0, description="L2 weight decay.")
    batch_size: int | None = Field(None, gt=0, description="Batch size per worker (default 128).")
    global_batch_size: int | None = Field(
        None, gt=0, description="Batch size summed over workers; give this or batch_size."
    )
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="linear: lr x global_batch_size / base_batch_size (Goyal et al.; use warmup)."
    )
    base_batch_size: int = Field(256, gt=0, description="The batch size `lr` was tuned for.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")


class ScheduleSpec(Section):
    """How long to train and how the learning rate moves."""

    kind: Literal["constant", "step", "plateau", "cosine", "onecycle"] = Field(
        "step", description="step: x gamma at milestones; plateau: x gamma when `monitor` stops improving "
        "(the paper's ImageNet rule); cosine: to 0; onecycle: linear up then down."
    )
    epochs: int = Field(10, gt=0, description="Passes over the training set.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many steps (smoke runs).")
    unit: Literal["epochs", "steps"] = Field("epochs", description="Unit of milestones and warmup.")
    milestones: list[int] = Field(default_factory=list, description="step: where lr is multiplied by gamma.")
    gamma: float = Field(0.1, gt=0, le=1, description="step, plateau: the factor at each reduction.")
    monitor: Literal["val_top1", "val_loss"] = Field(
        "val_top1", description="plateau: the validation metric watched (top-1 should rise, loss fall)."
    )
    patience: int = Field(5, ge=1, description="plateau: epochs without improvement before lr x gamma.")
    min_delta: float = Field(1e-3, ge=0, description="plateau: the smallest change that counts as improvement.")
    warmup: float = Field(0, ge=0, description="Length of the linear warmup, in `unit`.")
    warmup_start: float = Field(0.1, gt=0, le=1, description="lr factor at the start of warmup.")
    warmup_shape: Literal["linear", "constant"] = Field(
        "linear", description="linear: ramp from warmup_start to 1; constant: hold warmup_start (the paper's ResNet-110)."
    )
    peak_at: float = Field(0.25, gt=0, lt=1, description="onecycle: fraction of training at peak lr.")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(milestones)) or any(m <= 0 for m in milestones):
            raise ValueError("milestones must be positive and increasing")
        return milestones


class ScalingSpec(Section):
    """How many workers, on what hardware, at what precision."""

    num_workers: Annotated[int, Field(ge=1)] | tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = Field(
        1, description="Ray Train workers (one DDP process each), or [MIN, MAX] for an elastic job: it starts "
        "with the workers that fit (at least MIN) and grows up to MAX as nodes join.",
    )
    resize_check_seconds: float = Field(
        60, gt=0, description="Elastic jobs: how often a running job looks for room to grow (or must shrink).",
    )
    use_gpu: bool = Field(False, description="One GPU per worker (NCCL); false trains on CPUs (gloo).")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs reserved per worker (also torch threads).")
    placement: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement strategy of the workers across nodes."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="bf16: autocast; fp16: autocast + grad scaler (GPU only)."
    )
    channels_last: bool = Field(True, description="NHWC memory format (faster convs on CPU and GPU).")
    compile: bool = Field(False, description="torch.compile the model.")
    sync_batchnorm: bool = Field(False, description="Synchronise BN statistics across workers.")

    @field_validator("num_workers", mode="before")
    @classmethod
    def _count_or_range(cls, value: Any) -> int | tuple[int, int]:
        def count(item: Any) -> bool:
            return isinstance(item, int) and not isinstance(item, bool) and item >= 1

        def as_int(item: Any) -> Any:  # ${VAR} expands to text
            return int(item) if isinstance(item, str) and item.strip().isdigit() else item

        value = [as_int(item) for item in value] if isinstance(value, (list, tuple)) else as_int(value)
        if count(value):
            return value
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(count, value)) and value[0] <= value[1]:
            low, high = value
            return low if low == high else (low, high)
        raise ValueError(f"give a worker count >= 1 or an elastic range [MIN, MAX] with 1 <= MIN <= MAX "
                         f"(got {value!r})")

    @property
    def elastic(self) -> bool:
        return isinstance(self.num_workers, tuple)

    @property
    def min_workers(self) -> int:
        """The fewest workers the job runs with (the fixed count when not elastic)."""
        return self.num_workers[0] if self.elastic else self.num_workers

    @property
    def max_workers(self) -> int:
        """The most workers the job grows to (the fixed count when not elastic)."""
        return self.num_workers[1] if self.elastic else self.num_workers

    def describe_workers(self) -> str:
        """"4", or "1..4 (elastic)"."""
        return f"{self.min_workers}..{self.max_workers} (elastic)" if self.elastic else str(self.num_workers)

    @model_validator(mode="after")
    def _fp16_needs_gpu(self) -> ScalingSpec:
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("precision fp16 needs use_gpu: true (use bf16 or fp32 on CPUs)")
        return self


class CheckpointSpec(Section):
    """When training state is saved, and which checkpoints are kept."""

    every_epochs: int = Field(1, ge=1, description="Save every N epochs (and always at the end).")
    every_steps: int | None = Field(
        None, ge=1, description="Also save every N steps, mid-epoch too (a resumed run continues at that batch)."
    )
    keep: int = Field(2, ge=1, description="How many checkpoints to keep.")
    keep_by: Literal["latest", "best"] = Field("latest", description="Keep the latest or the best by val_top1.")


class FailureSpec(Section):
    """What happens when a worker process or a node dies."""

    max_failures: int = Field(
        0, ge=-1, description="Worker-group restarts from the latest checkpoint before giving up (-1: forever)."
    )
    max_preemption_failures: int = Field(
        -1, ge=-1, description="Restarts after spot preemptions (counted apart from max_failures; -1: forever)."
    )


class TrackingSpec(Section):
    """Where MLflow records the run."""

    experiment: str = Field("resplat", min_length=1, description="MLflow experiment name.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: the embedded SQLite store under .resplat/."
    )
    register_as: str | None = Field(None, description="Register the final model under this name.")


class StorageSpec(Section):
    """Where the run's checkpoints and prepared .beton files live (every node must reach it)."""

    uri: str | None = Field(
        default_factory=lambda: os.environ.get("RESPLAT_STORAGE_URI") or None, validate_default=True,
        description="A local or shared folder, or an object store URI (s3://bucket/prefix, gs://...; "
        "pyarrow options such as ?endpoint_override=HOST:PORT&scheme=http pass through). Default: the "
        "cluster's RESPLAT_STORAGE_URI, else RESPLAT_HOME.",
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        from urllib.parse import urlsplit

        from resplat.storage import OBJECT_STORES

        scheme = urlsplit(uri).scheme if uri else ""
        if scheme and scheme != "file" and scheme not in OBJECT_STORES:
            raise ValueError(f"{uri}: unknown scheme {scheme!r}; give a folder or one of "
                             f"{', '.join(s + '://' for s in OBJECT_STORES)}")
        return uri


class JobSpec(Section):
    """A resplat training job."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Job name (letters, digits, . _ -).")
    seed: int = Field(0, ge=0, description="Seed for weights, data order and augmentation.")
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec
    optim: OptimSpec = Field(default_factory=OptimSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)

    @model_validator(mode="after")
    def _supported_by_ffcv(self) -> JobSpec:
        if self.data.order == "quasi_random" and self.scaling.max_workers > 1:
            raise ValueError(
                "data.order quasi_random does not work with more than one worker (FFCV's distributed "
                "mode shuffles randomly); use data.order: random"
            )
        return self

    @model_validator(mode="after")
    def _derive_batch_sizes(self) -> JobSpec:
        workers = self.scaling.num_workers
        per_worker, total = self.optim.batch_size, self.optim.global_batch_size
        if self.scaling.elastic:
            # The global batch follows the workers of the moment: batch_size x the current world size.
            if total is not None:
                raise ValueError(
                    f"optim.global_batch_size cannot be fixed for an elastic scaling.num_workers "
                    f"{list(workers)} (the global batch is optim.batch_size x the current workers); "
                    "give optim.batch_size"
                )
            self.optim.batch_size = per_worker or 128
            return self
        if per_worker is None and total is None:
            per_worker = 128
        if total is None:
            total = per_worker * workers
        elif per_worker is None:
            if total % workers:
                raise ValueError(
                    f"optim.global_batch_size {total} does not divide over scaling.num_workers {workers}"
                )
            per_worker = total // workers
        elif per_worker * workers != total:
            raise ValueError(
                f"optim.batch_size {per_worker} x scaling.num_workers {workers} != "
                f"optim.global_batch_size {total}; give only one of them"
            )
        self.optim.batch_size, self.optim.global_batch_size = per_worker, total
        return self

    def global_batch_size(self, world_size: int) -> int:
        """Images per optimiser step over all workers, with `world_size` of them."""
        return self.optim.batch_size * world_size

    def peak_lr(self, world_size: int) -> float:
        """The peak learning rate with `world_size` workers, by optim.lr_scaling."""
        if self.optim.lr_scaling == "linear":
            return self.optim.lr * self.global_batch_size(world_size) / self.optim.base_batch_size
        return self.optim.lr

    @property
    def effective_lr(self) -> float:
        """The peak learning rate at the start (scaling.min_workers; the fixed count when not elastic)."""
        return self.peak_lr(self.scaling.min_workers)


# ---------------------------------------------------------------- loading

# Variables that need no setting: where resplat's own state and data sets live (see paths.py).
_BUILT_IN_DEFAULTS = {"RESPLAT_DATA": paths.datasets_dir, "RESPLAT_HOME": paths.home}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_variables(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """Replace ${VAR} and ${VAR:-default} in every string; return (value, problems)."""
    problems: list[str] = []
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[key], sub = expand_variables(item, f"{path}.{key}" if path else str(key))
            problems += sub
        return out, problems
    if isinstance(value, list):
        out_list = []
        for i, item in enumerate(value):
            expanded, sub = expand_variables(item, f"{path}[{i}]")
            out_list.append(expanded)
            problems += sub
        return out_list, problems
    if not isinstance(value, str):
        return value, problems

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:  # as in the shell, ${VAR:-default} also replaces an empty value
            return default
        if name in _BUILT_IN_DEFAULTS:
            return str(_BUILT_IN_DEFAULTS[name]())
        if value is not None:
            return value
        problems.append(f"{path}: environment variable {name} is not set (set it or write ${{{name}:-default}})")
        return match.group(0)

    return _VAR.sub(substitute, value), problems


def apply_overrides(raw: dict, overrides: list[str]) -> list[str]:
    """Apply `a.b=value` overrides (value parsed as YAML) to raw data; return problems."""
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected FIELD.PATH=VALUE, e.g. optim.lr=0.05")
            continue
        parts = key.strip().split(".")
        unknown = unknown_field(JobSpec, parts)
        if unknown:
            problems.append(f"--set {unknown}")
            continue
        try:
            value, duplicates = parse_yaml_text(text) if text.strip() else (None, [])
        except yaml.YAMLError:
            value, duplicates = text, []
        if duplicates:
            problems.append(f"--set {item!r}: {duplicates[0].split(': ', 1)[1]}")
            continue
        node = raw
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return problems


def unknown_field(model: type[BaseModel], parts: list[str]) -> str | None:
    """Why `parts` does not name a field of `model` (with a suggestion), or None."""
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            return _unknown_message(".".join(parts[: i + 1]), part, list(fields))
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif i < len(parts) - 1:
            return f"{'.'.join(parts[: i + 1])} has no sub-fields"
    return None


def _unknown_message(path: str, name: str, allowed: list[str]) -> str:
    guess = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean '{guess[0]}'? " if guess else ""
    return f"{path}: unknown field; {hint}allowed: {', '.join(allowed)}"


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def describe_errors(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """One readable line per pydantic error: `field.path: message`."""
    lines = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(root, loc[:-1])
            lines.append(_unknown_message(path, str(loc[-1]), list(parent.model_fields)))
            continue
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] not in ("value_error", "missing") and not isinstance(err.get("input"), (dict, list)):
            message += f" (got {err['input']!r})"
        lines.append(f"{path}: {message}")
    return lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that notes every mapping key given twice (plain YAML silently keeps the last one)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except (TypeError, yaml.YAMLError):
                    continue  # an unhashable key gets the base class's own error
                line = key_node.start_mark.line + 1
                if key in first_line:
                    self.duplicates.append(f"line {line}: duplicate key {key!r} (first on line {first_line[key]}); "
                                           "give each key once")
                else:
                    first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml_text(text: str) -> tuple[Any, list[str]]:
    """YAML text to Python data, plus one problem line per duplicate key; raises yaml.YAMLError."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data(), sorted(set(loader.duplicates), key=_line_number)
    finally:
        loader.dispose()


def _line_number(problem: str) -> int:
    return int(problem.split()[1].rstrip(":"))


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping; syntax errors become a SpecError with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), ["file not found"]) from None
    except IsADirectoryError:
        raise SpecError(str(path), ["is a folder, not a YAML file"]) from None
    except UnicodeDecodeError as e:
        problem = f"not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); a spec is a YAML text file"
        raise SpecError(str(path), [problem]) from None
    except OSError as e:
        raise SpecError(str(path), [f"cannot read: {e.strerror}"]) from None
    try:
        raw, duplicates = parse_yaml_text(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(str(path), [f"{where}YAML syntax error: {problem}"]) from None
    if duplicates:
        raise SpecError(str(path), duplicates)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(str(path), [f"the top level must be a mapping of sections, not {type(raw).__name__}"])
    return raw


def parse(model: type[BaseModel], raw: dict, source: str, overrides: list[str] = (), *,
          paths_elsewhere: bool = False):
    """Validate raw YAML data (plus overrides) as `model`, or raise one SpecError.
    `paths_elsewhere`: data paths name another machine's files (a cluster's); their existence is
    checked there."""
    problems = apply_overrides(raw, list(overrides)) if overrides else []
    raw, var_problems = expand_variables(raw)
    problems += var_problems
    try:
        spec = model.model_validate(raw, context={PATHS_ELSEWHERE: paths_elsewhere})
    except ValidationError as e:
        unset = {problem.split(":")[0] for problem in var_problems}  # say it once: the variable
        problems += [p for p in describe_errors(e, model) if p.split(":")[0] not in unset]
    if problems:
        raise SpecError(source, problems)
    return spec


def load_job(path: str | Path, overrides: list[str] = (), *, paths_elsewhere: bool = False) -> JobSpec:
    """Read, expand, override and validate a job spec file."""
    path = Path(path)
    return parse(JobSpec, read_yaml(path), str(path), overrides, paths_elsewhere=paths_elsewhere)


def to_yaml(spec: BaseModel) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def flatten(spec: BaseModel) -> dict[str, str]:
    """`section.field` -> value, as MLflow params."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            out[prefix] = str(value)

    walk("", spec.model_dump(mode="json"))
    return out

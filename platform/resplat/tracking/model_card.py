"""What a logged model carries besides its weights: the class names, the eval transform it expects,
and the few resplat modules its pickled network class needs, so it loads without resplat installed."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import yaml

CLASSES_KEY = "resplat.classes"
PIPELINE_KEY = "resplat.pipeline"
RESOLUTION_KEY = "resplat.resolution"

# The modules a pickled ResNet refers to: the network classes and what they import.
_MODEL_MODULES = ("__init__.py", "lazy.py", "models")
# What loading one needs besides those modules: the packages MLflow's inference finds for it, less
# resplat (its modules travel as code). Inference runs a subprocess that imports the model, seconds
# in every worker process that logs one; tests/test_registry.py checks this list against it.
_MODEL_PACKAGES = ("mlflow", "cloudpickle", "numpy", "pandas", "torch")


def model_metadata(resolved_spec_text: str) -> dict:
    """The MLmodel metadata of a job's model, from the run's resolved spec (its data are .beton files)."""
    from resplat.data import read_beton_info

    data = yaml.safe_load(resolved_spec_text)["data"]
    return {
        CLASSES_KEY: list(read_beton_info(Path(data["train"])).classes),
        PIPELINE_KEY: data.get("pipeline", "cifar"),
        RESOLUTION_KEY: int(data.get("resolution", 32)),
    }


@functools.cache
def _pinned_model_packages() -> tuple[str, ...]:
    from importlib.metadata import version

    return tuple(f"{name}=={version(name).split('+')[0]}" for name in _MODEL_PACKAGES)


def model_requirements() -> list[str]:
    """The pip requirements of a logged network: `_MODEL_PACKAGES` pinned to the installed versions."""
    return list(_pinned_model_packages())  # looked up once per process; a fresh list for each caller


def bundle_model_code(into: Path) -> Path:
    """Copy the modules the network class needs into `into`/resplat; return that folder (a code path)."""
    import resplat

    source = Path(resplat.__file__).parent
    target = Path(into) / "resplat"
    target.mkdir(parents=True)
    for name in _MODEL_MODULES:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source / name, target / name)
    return target

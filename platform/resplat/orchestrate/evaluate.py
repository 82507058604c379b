"""`resplat eval RUN_ID`: the paper's 10-crop and multi-scale testing of a finished run's model."""

from __future__ import annotations

import yaml

from resplat import paths
from resplat.errors import InputError
from resplat.spec import JobSpec, parse
from resplat.tracking.names import EVAL_VIEWS_TAG, MODEL_URI_TAG, RESOLVED_SPEC

TEN_CROP_SOURCE_RATIO = 256 / 224  # the paper crops 224 from images resized to 256


def evaluate_run(
    run_id: str, *, tracking_uri: str | None = None, ten_crop: bool = False, scales: list[int] | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Evaluate the model a run logged on its validation set; log and return the metrics.

    Each scale decodes the validation pipeline's centre crop (224/256 of the shorter
    side) resized to `scale` pixels; --ten-crop then takes the paper's ten crops of the
    training resolution from it. That is the paper's protocol up to the first centre crop.
    """
    import mlflow.pytorch

    from resplat.data import build_loader
    from resplat.tracking import TrackedRun
    from resplat.train.evaluation import evaluate_views

    run = TrackedRun.open(tracking_uri or paths.default_tracking_uri(), run_id)
    spec = parse(JobSpec, yaml.safe_load(run.read_text(RESOLVED_SPEC)), f"run {run_id} ({RESOLVED_SPEC})")
    model_uri = run.tags.get(MODEL_URI_TAG)
    if model_uri is None:
        raise InputError(f"run {run_id} has no logged model (did it finish?)")
    if ten_crop and spec.data.pipeline != "imagenet":
        raise InputError("--ten-crop is the ImageNet protocol; this run used the cifar pipeline")
    crop = spec.data.resolution if ten_crop else None
    scales = scales or [round(crop * TEN_CROP_SOURCE_RATIO) if crop else spec.data.resolution]
    if crop and min(scales) < crop:
        raise InputError(f"--scales: every scale must be at least the {crop}-pixel crop for --ten-crop")

    model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    loaders = [
        build_loader(spec.data.val, pipeline=spec.data.pipeline, train=False, batch_size=batch_size,
                     resolution=scale, num_workers=spec.data.loader_workers)
        for scale in scales
    ]
    batches = ((
        [images for images, _ in per_scale], per_scale[0][1]) for per_scale in zip(*loaders))
    metrics = evaluate_views(model, batches, crop=crop)
    views = f"{'10-crop' if crop else 'full image'} at {', '.join(map(str, scales))} px"
    run.log_metrics({k: v for k, v in metrics.items() if k != "eval_images"}, step=0)
    run.set_tags({EVAL_VIEWS_TAG: views})
    return {**metrics, "views": views}

"""`resplat models predict`: a registered model's top classes for image files, through MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from resplat.errors import InputError
from resplat.tracking.client import fluent_tracking_uri
from resplat.tracking.model_card import CLASSES_KEY, PIPELINE_KEY, RESOLUTION_KEY


@dataclass
class Prediction:
    image: Path
    top: list[tuple[str, float]]  # (class name, probability), most likely first


def read_images(images: list[Path]) -> list:
    """Decode every file as RGB first, so a bad one fails before any model is loaded."""
    from PIL import Image, UnidentifiedImageError

    if not images:
        raise InputError("IMAGE: give at least one image file")
    decoded = []
    for path in images:
        if not Path(path).is_file():
            raise InputError(f"{path}: no such image file")
        try:
            with Image.open(path) as image:
                decoded.append(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise InputError(f"{path}: not an image that can be read ({error.__class__.__name__})") from None
    return decoded


def eval_tensor(image, *, pipeline: str, resolution: int):
    """The validation pipeline's view of one image: cifar resizes the whole image, imagenet takes
    the centre crop of 224/256 of the shorter side; both normalise with the data set's statistics."""
    import numpy as np
    import torch
    from PIL import Image

    from resplat.data.pipelines import (
        CIFAR10_MEAN,
        CIFAR10_STD,
        IMAGENET_CENTER_CROP_RATIO,
        IMAGENET_MEAN,
        IMAGENET_STD,
    )

    if pipeline == "imagenet":
        width, height = image.size
        side = round(min(width, height) * IMAGENET_CENTER_CROP_RATIO)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
    pixels = (np.asarray(image, dtype=np.float32) - np.array(mean, np.float32)) / np.array(std, np.float32)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def predict(tracking_uri: str, reference: str, images: list[Path], *, top: int = 5) -> tuple[str, list[Prediction]]:
    """Load model `reference` (NAME, NAME@alias, NAME/version) and rank classes for each image.

    Returns the model URI used and one Prediction per image.
    """
    decoded = read_images(images)

    import mlflow
    import mlflow.models
    import mlflow.pytorch
    import torch

    from resplat.tracking.registry import resolve

    name, version = resolve(tracking_uri, reference)
    model_uri = f"models:/{name}/{version}"
    with fluent_tracking_uri(tracking_uri):
        metadata = mlflow.models.get_model_info(model_uri).metadata or {}
    if CLASSES_KEY not in metadata:
        raise InputError(f"{model_uri} was logged without its class names and eval transform; "
                         "log it again with this resplat")
    classes = list(metadata[CLASSES_KEY])
    batch = torch.stack([eval_tensor(image, pipeline=metadata[PIPELINE_KEY],
                                     resolution=int(metadata[RESOLUTION_KEY])) for image in decoded])
    with fluent_tracking_uri(tracking_uri):
        model = mlflow.pytorch.load_model(model_uri, map_location="cpu").eval()
    with torch.no_grad():
        probabilities = model(batch).softmax(dim=1)
    k = min(top, len(classes))
    values, indices = probabilities.topk(k, dim=1)
    predictions = [
        Prediction(Path(path), [(classes[i], float(p)) for p, i in zip(vs.tolist(), ix.tolist(), strict=True)])
        for path, vs, ix in zip(images, values, indices, strict=True)
    ]
    return model_uri, predictions

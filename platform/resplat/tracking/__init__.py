"""MLflow tracking: one run per job, metrics per epoch, the final model, the registry."""

from resplat.tracking.runs import TrackedRun, tracking_uri_for

__all__ = ["TrackedRun", "tracking_uri_for"]

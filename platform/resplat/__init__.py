"""resplat: a training platform for deep residual networks (Ray Train + FFCV + MLflow)."""

__version__ = "0.1.0"

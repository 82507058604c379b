"""Ray wiring: start or join Ray, run the training loop under TorchTrainer, stream progress."""

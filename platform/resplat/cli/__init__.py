"""The `resplat` command line: thin typer commands over the service functions."""

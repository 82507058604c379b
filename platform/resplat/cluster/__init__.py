"""The client side of a Ray cluster: start/stop/status of a head, the Jobs API, launcher files."""

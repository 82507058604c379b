"""The sweep report's presentation: plots (matplotlib) and the HTML page; no store access."""

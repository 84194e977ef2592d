"""Developer scripts: benchmarks and the like, run as `python -m tools.<name>`."""

"""Benchmarks of the pipeline and the attribution methods (python -m benchmarks.pipeline / .attribution)."""

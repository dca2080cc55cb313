"""Evaluation: answer parsing and the metric families of the paper's benchmarks (no torch)."""

"""Benchmarks (not tests): timings against a baseline measured in the same run."""

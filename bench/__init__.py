"""Benchmarks: throughput and scaling figures of every stage, with one shared runner."""

"""Benchmark scripts; results go to benchmarks/results/*.json and docs/BENCHMARKS.md."""

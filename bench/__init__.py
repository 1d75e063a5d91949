"""Benchmark harness (`make bench`)."""

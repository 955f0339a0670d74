"""Benchmarks for ringnet's C core; run as scripts, see perf/README.md."""

"""Tests of the benchmarks' pure parts, imported from the `benchmarks` package; importing a
benchmark runs nothing (its work is behind `__main__`)."""

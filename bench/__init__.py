"""Benchmarks: they print figures (medians, ratios against a baseline of the same run)."""

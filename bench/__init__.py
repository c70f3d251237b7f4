"""Benchmarks: they print figures and compare against a baseline measured in the same run."""

"""Benchmarks (`python -m demt_exp.bench --help`): each prints figures measured in one run on this machine."""

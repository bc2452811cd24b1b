"""Benchmarks (`make bench`). Every speed figure is a ratio against a reference run on the
same machine, in the same run; medians of several repeats, each printed."""

"""Reproducible benchmarks: each module runs on its own and prints figures and ratios
measured side by side in one run, and writes JSON with versions and machine facts."""

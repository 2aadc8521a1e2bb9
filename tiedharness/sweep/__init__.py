"""Sweeps of many jobs, as Hydra plugins: the per-cell search sweeper (search.py, which
reads its grid and search space through grid.py) and the callback that reports a sweep
while it runs and when it ends (summary.py)."""

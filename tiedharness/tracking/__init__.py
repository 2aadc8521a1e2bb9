"""Where a run's numbers go: the run record, the run folder, local files and W&B."""

"""Hydra instantiates sweepers only from classes defined under the `hydra_plugins` package:
this defines tiedharness's there; the logic is tiedharness/search.py."""

from tiedharness import search


class StudyPerCellSweeper(search.StudyPerCellSweeper):
    """One Optuna study per cell of the grid (tiedharness/search.py)."""

"""Hydra instantiates sweepers only from classes defined under the `hydra_plugins` package:
this defines tiedharness's there; the logic is tiedharness/sweep/search.py. As the
command's side of the sweeper, it turns a search that cannot start into exit status 2
with one line saying what to change."""

from tiedharness.cli import fail
from tiedharness.sweep import search


class StudyPerCellSweeper(search.StudyPerCellSweeper):
    """One Optuna study per cell of the grid (tiedharness/sweep/search.py)."""

    def __init__(self, *args, **kwargs) -> None:
        try:
            super().__init__(*args, **kwargs)
        except search.SearchConfigError as err:
            fail(str(err))

    def sweep(self, arguments: list[str]) -> None:
        try:
            super().sweep(arguments)
        except search.SearchConfigError as err:
            fail(str(err))

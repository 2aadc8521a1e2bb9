"""How a job starts in its run folder, given what a previous start left there.

When a job starts in a folder that already holds a run (a rerun of a sweep into its
folder, a requeued SLURM job, the same command with the same `hydra.run.dir`),
`plan_start` decides:

- the same config, finished (`completed`, `diverged`, `skipped`, `pruned`): keep it,
  train nothing;
- the same config with a checkpoint: resume from it, the history cut back to it;
- the same config, no checkpoint (`failed`, `interrupted` early, a dead `running`): train
  it again from the start (the previous attempt's files are removed);
- a different config: refuse, and leave everything as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import auto

from tiedharness.schema import Choice
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder, RunFolderError

FINISHED = (RunStatus.completed, RunStatus.diverged, RunStatus.skipped, RunStatus.pruned)

# Settings that change how a run is carried out, not what it computes: a resume may differ.
RESUMABLE_CHANGES = (
    "logger",
    "results_dir",
    "scale",  # a study's numbers: what they change shows in the groups that use them
    "objective",
    "trainer.checkpoint_every",
    "trainer.checkpoint_every_s",
    "trainer.num_threads",
)


def same_config(a: dict, b: dict) -> bool:
    """Whether two resolved configs train the same run."""

    def strip(config: dict) -> dict:
        out = {
            group: dict(values) if isinstance(values, dict) else values
            for group, values in config.items()
        }
        for key in RESUMABLE_CHANGES:
            group, _, name = key.partition(".")
            if name and isinstance(out.get(group), dict):
                out[group].pop(name, None)
            elif not name:
                out.pop(group, None)
        return out

    return strip(a) == strip(b)


class StartKind(Choice):
    new = auto()  # an empty folder
    rerun = auto()  # the same run, trained again from its first step
    resume = auto()  # the same run, continued from its checkpoint
    keep = auto()  # the same run, finished: nothing to do


@dataclass
class Start:
    """How a job starts in its folder, with what the folder held."""

    kind: StartKind
    previous: RunRecord | None = None
    checkpoint: dict | None = None

    @property
    def step(self) -> int:
        """The step a resume continues from."""
        from tiedharness.checkpoint import checkpoint_step

        return checkpoint_step(self.checkpoint) if self.checkpoint else 0


def plan_start(folder: RunFolder, config: dict) -> Start:
    """What a job with this resolved `config` does in `folder` (see the module's doc).
    Raises RunFolderError for a folder holding another configuration's run and
    CheckpointError for a checkpoint that cannot be read."""
    from tiedharness.checkpoint import load_checkpoint  # torch loads here

    previous = folder.previous_record()
    if previous is None:
        if folder.checkpoint.is_file():
            raise RunFolderError(
                f"{folder.path} holds a checkpoint but no readable run record; move the "
                "folder away, or choose another hydra.run.dir / hydra.sweep.dir"
            )
        return Start(StartKind.new)
    if not same_config(previous.config, config):
        raise RunFolderError(
            f"{folder.path} holds a run of another configuration ({previous.run_id}, "
            f"{previous.status}); choose another hydra.run.dir / hydra.sweep.dir, or "
            "delete that folder to replace it"
        )
    if previous.status in FINISHED:
        return Start(StartKind.keep, previous)
    checkpoint = load_checkpoint(folder.checkpoint)
    if checkpoint is None:
        return Start(StartKind.rerun, previous)
    return Start(StartKind.resume, previous, checkpoint)

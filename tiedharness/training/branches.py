"""Budget branches: one run's metrics at several budgets, for about 15% more compute.

Under a warmup-stable-decay schedule (`trainer.schedule=wsd`) the learning rate is flat
until the last `decay_frac` of the budget. A run with `trainer.branch_at=[0.25, 0.5]`
therefore passes, in its stable phase, the state a run with a quarter (a half) of the
budget would have had when its own decay began. There it forks a branch: the branch
trains that shorter run's decay (`decay_frac` of `fraction` × the budget, on the data the
main run would have seen next), is evaluated, and the main run then continues from its
own state at the fork, untouched: model, optimizer, data position, loss window and RNG
streams are restored, so its numbers are those of a run without branches.

The extra training is `decay_frac` × the sum of the fractions (0.2 × 0.75 = 15% for the
defaults above); each branch adds one evaluation. Checkpoints written inside a branch
hold the main run's state at the fork too, so a run killed there resumes inside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tiedharness.training.config import TrainerConfig


@dataclass(frozen=True)
class Branch:
    fraction: float  # of the run's budget in steps
    fork: int  # the step where the branch's decay begins (a stable-phase step of the main run)
    end: int  # the branch's last step: fraction × the budget


def branch_plan(cfg: TrainerConfig, total_steps: int | None) -> list[Branch]:
    """The branches of `cfg.branch_at` for a budget of `total_steps` updates, in order."""
    if not cfg.branch_at:
        return []
    if not total_steps:
        raise ValueError(
            "trainer.branch_at needs a budget in steps or tokens: set trainer.max_steps "
            "or trainer.max_train_tokens"
        )
    plan = []
    for fraction in sorted(cfg.branch_at):
        end = round(fraction * total_steps)
        # the same decay start as optim.lr_factor gives a run of `end` steps
        plan.append(Branch(fraction, end - max(1, round(cfg.decay_frac * end)), end))
    return plan


class BudgetBranches:
    """The branches of one run: which one is due, the one running (with the main run's
    state at its fork, restored when it ends), and the run's budgets evaluated so far:
    each branch's end, and the whole budget's once the run records it."""

    def __init__(self, cfg: TrainerConfig, total_steps: int | None) -> None:
        self.plan = branch_plan(cfg, total_steps)
        self.active: Branch | None = None
        self.main: dict | None = None  # the main run's trainer state at the active fork
        self._budgets: list[dict] = []  # fraction, step, tokens and metrics of each budget

    @property
    def budgets(self) -> list[dict]:
        """The budgets evaluated so far, smallest first."""
        return sorted(self._budgets, key=lambda budget: budget["fraction"])

    def record_whole(self, step: int, tokens: int, metrics: dict) -> None:
        """The whole budget's metrics (fraction 1.0): the run's final evaluation."""
        self._budgets.append({"fraction": 1.0, "step": step, "tokens": tokens, **metrics})

    def due(self, step: int) -> Branch | None:
        """The branch that forks at `step`, unless it ran already or one is running."""
        if self.active is not None:
            return None
        done = {budget["fraction"] for budget in self._budgets}
        return next((b for b in self.plan if b.fork == step and b.fraction not in done), None)

    def fork(self, branch: Branch, main_state: dict) -> None:
        self.active, self.main = branch, main_state

    def join(self, budget: dict) -> dict:
        """Record the active branch's budget; returns the main run's state to restore."""
        main, self.active, self.main = self.main, None, None
        self._budgets.append(budget)
        return main

    def state_dict(self) -> dict:
        return {
            "active": None if self.active is None else asdict(self.active),
            "main": self.main,
            "budgets": [dict(b) for b in self._budgets],
        }

    def load_state_dict(self, state: dict) -> None:
        self.active = None if state["active"] is None else Branch(**state["active"])
        self.main = state["main"]
        self._budgets = [dict(b) for b in state["budgets"]]

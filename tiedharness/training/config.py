"""Schema of the `trainer` config group: optimisation, budget, evaluation (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tiedharness.schema import (
    Choice,
    coerce_choices,
    require,
    require_fraction,
    require_non_negative,
    require_positive,
)


class Precision(Choice):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast; on CPU too


class Schedule(Choice):
    inverse_sqrt = "inverse_sqrt"  # linear warmup, then 1/√step (Vaswani et al.)
    cosine = "cosine"  # linear warmup, then cosine to zero at the end of the budget
    constant = "constant"  # linear warmup, then flat
    # warmup-stable-decay: linear warmup, flat, then down to zero over the last
    # `decay_frac` of the budget (Hu et al. 2024, MiniCPM; Hägele et al. 2024)
    wsd = "wsd"


# Schedules whose learning rate reaches zero at the end of the budget: a flat tail of the
# validation curve is then forced by the schedule, and says nothing about convergence.
ANNEALED = (Schedule.cosine, Schedule.wsd)


class DecayShape(Choice):
    linear = "linear"  # 1 − x over the decay
    sqrt = "sqrt"  # 1 − √x (Hägele et al. 2024: slightly better than linear)


DEVICES = ("auto", "cpu", "cuda", "mps")  # cuda:N names one GPU


@dataclass
class TrainerConfig:
    seed: int = 0  # seeds the model, the data order and dropout: the same seed repeats a run
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    precision: Precision = Precision.fp32  # fp32, or bf16 autocast (on CPU too)
    compile: bool = False  # torch.compile the training forward
    lr: float = 5e-4  # peak learning rate of AdamW (the schedule multiplies it)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # AdamW (β1, β2)
    weight_decay: float = 0.01  # on matrices only: tiedharness/training/optim.py
    warmup_steps: int = 200  # updates of linear warmup from 0 to lr
    schedule: Schedule = (
        Schedule.inverse_sqrt
    )  # after warmup: inverse_sqrt | cosine | constant | wsd
    # wsd: the share of the budget (and of each branch's budget) spent decaying to zero
    decay_frac: float = 0.2
    decay_shape: DecayShape = DecayShape.linear  # wsd: the decay as 1 − x (linear) or 1 − √x (sqrt)
    # wsd: fractions of the budget at which the run forks a decay branch from its stable
    # phase, trains that branch's decay, evaluates it and continues the main run
    # untouched; run.json's `budgets` holds each budget's metrics (docs/metrics.md)
    branch_at: list[float] = field(default_factory=list)
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    label_smoothing: float = 0.1  # of the training loss (validation loss has none)
    # batches per optimizer update on each rank (their gradients averaged): a paper's batch
    # on fewer devices; the schedule counts updates
    accum_steps: int = 1
    # shard parameters, gradients and optimizer state over the ranks with FSDP2 instead of
    # replicating them with DDP (tiedharness/training/sharding.py: which ties can shard)
    fsdp: bool = False
    max_steps: int | None = 2000  # budget: the first of steps, tokens, seconds to run out
    max_train_tokens: int | None = None  # target tokens
    max_time_s: float | None = None  # wall-clock seconds of the training loop
    eval_every: int = 500  # steps between validation-loss evaluations (and one at the end)
    # Evaluated examples are drawn at random across the split, the same for every run on
    # the same data (tiedharness/tasks/data.py, TaskData.sample).
    eval_examples: int | None = None  # validation loss; null: the whole split
    decode_examples: int = 200  # validation examples decoded (exact match, BLEU, speed); 0: none
    test_examples: int | None = None  # test loss and decoding at each budget; null: all, 0: none
    # Convergence (tiedharness/training/convergence.py): converged when the validation loss
    # is expected to improve by less than `converge_tolerance` (relative) or
    # `converge_tolerance_abs` (nats) over the last `converge_window` of the budget.
    converge_window: float = 0.2
    converge_tolerance: float = 0.01  # converged below this relative improvement
    converge_tolerance_abs: float = 0.01  # … or below this improvement in nats
    log_every: int = 50  # updates between logged training losses
    # checkpoint.pt in the run folder (tiedharness/checkpoint.py): every N steps
    # and/or every N seconds of training, on a stop signal, and at the end; a job whose
    # folder holds one resumes from it. null disables that trigger.
    checkpoint_every: int | None = None
    checkpoint_every_s: float | None = 600.0  # seconds of training between checkpoints
    # torch threads; null: a fair share of the host's CPUs among the tiedharness jobs on it
    num_threads: int | None = None
    deterministic: bool = True  # torch deterministic algorithms (warn where none exists)
    profile: bool = True  # FLOP and time shares of the output layer, on the first batch
    profile_reps: int = 12  # alternating timings of the profile; the spread is their IQR

    def __post_init__(self) -> None:
        coerce_choices(self, "trainer")
        require_positive(self, "trainer", "lr", "max_steps", "max_train_tokens", "max_time_s")
        require_positive(self, "trainer", "eval_every", "eval_examples", "log_every", "num_threads")
        require_positive(self, "trainer", "profile_reps")
        require_positive(self, "trainer", "converge_window", "converge_tolerance")
        require_positive(self, "trainer", "checkpoint_every", "checkpoint_every_s", "accum_steps")
        require_non_negative(self, "trainer", "converge_tolerance_abs")
        require_fraction(self, "trainer", "converge_window")
        require_non_negative(
            self, "trainer", "weight_decay", "warmup_steps", "grad_clip", "decode_examples"
        )
        require_non_negative(self, "trainer", "test_examples")
        require_fraction(self, "trainer", "label_smoothing")
        require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "trainer.betas",
            self.betas,
            "must be two numbers in [0, 1)",
        )
        require(
            self.device.split(":")[0] in DEVICES,
            "trainer.device",
            self.device,
            f"must be one of {', '.join(DEVICES)} (or cuda:N)",
        )
        if not (self.max_steps or self.max_train_tokens or self.max_time_s):
            raise ValueError(
                "the training budget is unbounded: set trainer.max_steps, "
                "trainer.max_train_tokens or trainer.max_time_s"
            )
        if self.schedule in ANNEALED and not (self.max_steps or self.max_train_tokens):
            raise ValueError(
                f"trainer.schedule={self.schedule} needs trainer.max_steps or "
                "trainer.max_train_tokens to know its length"
            )
        self._check_branches()

    def _check_branches(self) -> None:
        require(
            0 < self.decay_frac <= 1, "trainer.decay_frac", self.decay_frac, "must lie in (0, 1]"
        )
        if not self.branch_at:
            return
        require(
            self.schedule == Schedule.wsd,
            "trainer.branch_at",
            self.branch_at,
            "budget branches fork from a stable phase: set trainer.schedule=wsd",
        )
        require(
            all(0 < f < 1 for f in self.branch_at)
            and len(set(self.branch_at)) == len(self.branch_at),
            "trainer.branch_at",
            self.branch_at,
            "must be distinct fractions of the budget in (0, 1); the whole budget is always evaluated",
        )
        require(
            not self.fsdp,
            "trainer.branch_at",
            self.branch_at,
            "budget branches copy the model's state, which FSDP2 shards: set trainer.fsdp=false",
        )

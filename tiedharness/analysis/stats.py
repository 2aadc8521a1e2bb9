"""The statistics of a comparison: intervals over seeds, paired differences against the
baseline with a p-value (training variance: the report's significance), and sacreBLEU's
paired bootstrap on the same sentences (decoding variance only, reported beside it)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from scipy import stats

SIGNIFICANCE = 0.05
MIN_SEEDS = 3  # fewer replicates are flagged, not silently summarised
# sacreBLEU's paired bootstrap: resamples, and the seed of its resampling (sacreBLEU reads
# it from SACREBLEU_SEED; 12345 is its own default), fixed so that a report is reproducible
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 12345


def ci95(std: float, n: int) -> float:
    """Half-width of the 95% confidence interval of a mean of n samples (Student's t)."""
    if n < 2 or not math.isfinite(std):
        return float("nan")
    return float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)


def paired_difference(differences: Sequence[float]) -> dict[str, float]:
    """Mean of per-seed differences, its 95% interval and the two-sided p-value of a
    paired t-test (the differences' mean against 0). NaN where n < 2."""
    values = [d for d in differences if math.isfinite(d)]
    n = len(values)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "ci95": nan, "p": nan, "n": 0}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci95": nan, "p": nan, "n": n}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if std == 0:  # every seed differs by the same amount (a parameter count, say)
        return {"mean": mean, "ci95": 0.0, "p": 1.0 if mean == 0 else 0.0, "n": n}
    return {
        "mean": mean,
        "ci95": ci95(std, n),
        "p": float(stats.ttest_1samp(values, 0.0).pvalue),
        "n": n,
    }


def bleu_paired_bootstrap(
    baseline: Sequence[str],
    system: Sequence[str],
    references: Sequence[str],
    samples: int = BOOTSTRAP_SAMPLES,
) -> float:
    """sacreBLEU's paired bootstrap p-value that `system`'s BLEU differs from the
    baseline's, on the same sentences and references, resampled with BOOTSTRAP_SEED.
    It resamples the sentences of two fixed systems: the variance of decoding a test set,
    not of training them (a paired t over seeds measures that).
    sacreBLEU gives two systems with the same BLEU p = 1/(samples+1) (it counts resamples
    whose difference exceeds the observed one, and none exceeds 0); an observed
    difference of 0 is no evidence of a difference, so that case is p = 1 here."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    bleu = BLEU()
    refs = [list(references)]
    if bleu.corpus_score(list(system), refs).score == bleu.corpus_score(list(baseline), refs).score:
        return 1.0
    with sacrebleu_seed(BOOTSTRAP_SEED):
        test = PairedTest(
            [("baseline", list(baseline)), ("system", list(system))],
            {"BLEU": BLEU()},
            refs,
            test_type="bs",
            n_samples=samples,
        )
        _, scores = test()
    return float(scores["BLEU"][1].p_value)


@contextmanager
def sacrebleu_seed(seed: int) -> Iterator[None]:
    """SACREBLEU_SEED set to `seed` while sacreBLEU reads it (PairedTest takes its seed
    from the environment only), and put back afterwards."""
    before = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if before is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = before

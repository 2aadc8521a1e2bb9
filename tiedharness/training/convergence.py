"""Has a run stopped improving? Measured on its validation-loss curve (docs/metrics.md).

`val_loss_slope` is the least-squares slope of validation loss against training tokens
over the last `window` of the budget (the evaluations at or after (1 − window) × the
final token count), in nats per million tokens. The window's expected improvement is
−slope × window tokens; a run is `converged` when that is below `tolerance` relative to
the final validation loss (1% over the last fifth by default) or below `tolerance_abs`
nats (0.01): like `math.isclose`, a relative tolerance alone means nothing for a loss
near zero, where 1% is below the noise of evaluation. A loss that rises there
(over-fitting) counts as converged: more of the same training would not help. Fewer
than 3 evaluations in the window cannot tell: not converged, slope from what is there.
"""

from __future__ import annotations

import math

MIN_POINTS = 3


def convergence(
    curve: list[tuple[int, float]],
    window: float = 0.2,
    tolerance: float = 0.01,
    tolerance_abs: float = 0.01,
) -> dict[str, float | bool | None]:
    """`curve`: (training tokens, validation loss) of every evaluation, in order."""
    points = [(t, loss) for t, loss in curve if math.isfinite(loss)]
    if len(points) < 2:
        return {"val_loss_slope": None, "val_loss_improvement": None, "converged": False}
    final_tokens = points[-1][0]
    start = (1 - window) * final_tokens
    tail = [(t, loss) for t, loss in points if t >= start]
    if len(tail) < 2:
        tail = points[-2:]
    slope = least_squares_slope(tail)  # nats per token
    gain = -slope * window * final_tokens  # nats the window is expected to gain
    improvement = gain / points[-1][1] if points[-1][1] else float("inf")
    small = improvement < tolerance or gain < tolerance_abs
    return {
        "val_loss_slope": slope * 1e6,
        "val_loss_improvement": improvement,
        "converged": len(tail) >= MIN_POINTS and small,
    }


def least_squares_slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx if sxx else 0.0

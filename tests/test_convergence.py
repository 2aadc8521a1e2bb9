"""Convergence from a validation curve, on curves whose answer is known."""

from __future__ import annotations

import math

import pytest

from tiedharness.training.convergence import convergence, least_squares_slope


def test_least_squares_slope_of_a_line():
    assert least_squares_slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == 2.0


def test_a_curve_still_falling_is_not_converged():
    # tokens in millions: the last fifth (0.8M…1M) falls by 0.2 nats from 4.2 to 4.0
    curve = [(0, 8.0), (400_000, 5.0), (800_000, 4.2), (900_000, 4.1), (1_000_000, 4.0)]
    result = convergence(curve)
    assert result["val_loss_slope"] == pytest.approx(-1.0)  # nats per million tokens
    assert result["val_loss_improvement"] == pytest.approx(1.0 * 0.2 / 4.0)  # 5%
    assert result["converged"] is False


def test_a_flat_tail_is_converged():
    curve = [(0, 8.0), (500_000, 4.1), (800_000, 4.002), (900_000, 4.001), (1_000_000, 4.0)]
    result = convergence(curve)
    assert result["val_loss_improvement"] == pytest.approx(0.01 * 0.2 / 4.0)
    assert result["converged"] is True


def test_a_loss_near_zero_converges_by_the_absolute_tolerance():
    # 0.075 → 0.068: a 10% relative gain, but 0.005 nats, below the noise of evaluation
    curve = [(0, 5.0), (800, 0.075), (900, 0.071), (1000, 0.068)]
    result = convergence(curve)
    assert result["val_loss_improvement"] > 0.01 and result["converged"] is True
    assert convergence(curve, tolerance_abs=0.0)["converged"] is False


def test_a_rising_tail_is_over_fitting_and_counts_as_converged():
    result = convergence([(0, 5.0), (800, 3.0), (900, 3.1), (1000, 3.2)])
    assert result["val_loss_improvement"] < 0 and result["converged"] is True


def test_too_few_evaluations_cannot_tell():
    assert convergence([(1000, 3.0)])["converged"] is False
    result = convergence([(0, 5.0), (500, 4.0), (1000, 3.9)])  # one point in the window
    assert result["converged"] is False and math.isfinite(result["val_loss_slope"])

"""The ramp-up schedules in closed form."""

from __future__ import annotations

import math

import pytest

from reprlab.methods.rampup import linear_rampup, sigmoid_rampup


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, math.exp(-5)), (50, math.exp(-1.25)), (100, 1.0), (250, 1.0), (-3, math.exp(-5))],
)
def test_sigmoid_rampup_is_exp_of_minus_five_times_the_remaining_squared(step, expected):
    assert sigmoid_rampup(step, 100) == pytest.approx(expected)


def test_no_rampup_length_means_full_weight_at_once():
    assert sigmoid_rampup(0, 0) == 1.0


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 0.0), (99, 0.0), (100, 0.0), (150, 0.5), (200, 1.0), (900, 1.0)]
)
def test_linear_rampup_is_zero_then_linear_then_one(step, expected):
    assert linear_rampup(step, 100, 200) == pytest.approx(expected)

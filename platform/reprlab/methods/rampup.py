"""Weight ramp-ups of the semi-supervised methods: the unlabelled term starts near zero, while
the network's predictions are still noise, and reaches its full weight after a while."""

from __future__ import annotations

import math


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(-5 (1 - t)^2) with t = step / length clipped to [0, 1] (Laine & Aila 2017, used by
    Mean Teacher and MixMatch's code): 1 from `length` on, and 1 throughout when length is 0."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0), length) / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


def linear_rampup(step: int, start: int, end: int) -> float:
    """0 until `start`, rising linearly to 1 at `end`, then 1 (Lee 2013's alpha(t) schedule,
    divided by its final value)."""
    if step < start:
        return 0.0
    if step >= end:
        return 1.0
    return (step - start) / (end - start)

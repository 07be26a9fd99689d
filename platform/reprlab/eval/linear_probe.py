"""Linear probe: logistic regression on frozen features, the standard SSL evaluation."""

from __future__ import annotations

import numpy as np


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    c: float = 1.0,
    max_iter: int = 2000,
) -> float:
    """Held-out accuracy of an L2-regularised multinomial logistic regression fitted on
    standardised train features."""
    # sklearn imported here: only the driver probes, Train workers skip its import
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))

"""The risk–coverage area by sorting, for the functional and metric tests."""
import numpy as np


def _naive_aurc(scores: np.ndarray, wrong: np.ndarray) -> tuple[float, float]:
    order = np.argsort(scores, kind='stable')  # most certain first
    errors = np.cumsum(wrong[order])
    k = np.arange(1, len(scores) + 1)
    aurc = np.mean(errors / k)
    best = np.cumsum(np.sort(wrong))  # errors last
    return aurc, aurc - np.mean(best / k)

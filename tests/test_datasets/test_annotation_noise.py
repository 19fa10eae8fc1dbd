"""The known label-noise model: exact distribution, sampling, entropy coding."""
import numpy as np
import pytest

from mmseg_uncert.datasets.annotation_noise import (decode_entropy,
                                                    encode_entropy, entropy,
                                                    jitter_labels,
                                                    label_distribution)


def _naive_distribution(prior: np.ndarray, jitter: int) -> np.ndarray:
    """Average the prior over every clamped offset, one pixel at a time."""
    k, h, w = prior.shape
    out = np.zeros(prior.shape)
    for y in range(h):
        for x in range(w):
            for dy in range(-jitter, jitter + 1):
                for dx in range(-jitter, jitter + 1):
                    yy = min(max(y + dy, 0), h - 1)
                    xx = min(max(x + dx, 0), w - 1)
                    out[:, y, x] += prior[:, yy, xx]
    return out / (2 * jitter + 1) ** 2


@pytest.mark.parametrize('jitter', [0, 1, 2])
def test_distribution_equals_naive_enumeration(jitter):
    rng = np.random.default_rng(0)
    prior = rng.random((3, 7, 9))
    prior /= prior.sum(0, keepdims=True)
    np.testing.assert_allclose(label_distribution(prior, jitter),
                               _naive_distribution(prior, jitter), atol=1e-12)


def test_jittered_labels_follow_the_distribution():
    rng = np.random.default_rng(1)
    label = np.zeros((6, 6), np.uint8)
    label[:, 3:] = 1
    label[4:, :2] = 2
    prior = np.stack([(label == c).astype(float) for c in range(3)])
    expected = label_distribution(prior, 1)
    draws = np.stack([jitter_labels(label, 1, rng) for _ in range(4000)])
    freq = np.stack([(draws == c).mean(0) for c in range(3)])
    # 4000 draws: binomial standard error <= 0.008
    np.testing.assert_allclose(freq, expected, atol=0.035)


def test_entropy_by_hand():
    prob = np.array([[1.0, 0.5, 0.25], [0.0, 0.5, 0.75]])[:, None, :]
    expected = [0.0, np.log(2), -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))]
    np.testing.assert_allclose(entropy(prob)[0], expected, atol=1e-12)


def test_entropy_png_round_trip():
    h = np.array([0.0, 1e-4, np.log(2), np.log(19)])
    png = encode_entropy(h)
    assert png.dtype == np.uint16
    assert png.tolist() == [0, 1, 6931, 29444]
    np.testing.assert_allclose(decode_entropy(png), h, atol=5e-5)


def test_negative_jitter_is_an_error():
    with pytest.raises(ValueError, match='jitter'):
        label_distribution(np.ones((1, 2, 2)), -1)

"""The uncertainty metrics' streaming maths: curves, risk-coverage, calibration.

mmseg_uncert.evaluation.functional against scikit-learn, torchmetrics and
naive computations.
"""
import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torchmetrics.classification import MulticlassCalibrationError

from mmseg_uncert.evaluation import functional as F

from helpers import exact_metrics as X
from helpers.naive_metrics import _naive_aurc


def _hist(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Counts (or weight sums) of the values in the metric's score bins."""
    return F.counts(F.score_bins(values), F.NUM_SCORE_BINS, weights)


def _curves(pos_scores: np.ndarray, neg_scores: np.ndarray) -> dict:
    return F.binary_curve_metrics(_hist(torch.from_numpy(pos_scores)),
                                  _hist(torch.from_numpy(neg_scores)))


def _sklearn_curves(pos_scores, neg_scores) -> dict:
    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    s = np.r_[pos_scores, neg_scores]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return dict(auroc=roc_auc_score(y, s), aupr=average_precision_score(y, s),
                fpr95=fpr[np.argmax(tpr >= 0.95)])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_curves_equal_sklearn_with_ties(seed):
    """Scores on a grid coarser than the bins: ties are ties in both."""
    rng = np.random.default_rng(seed)
    pos = np.round(rng.beta(3, 2, 3000), 3)
    neg = np.round(rng.beta(2, 3, 5000), 3)
    ours, ref = _curves(pos, neg), _sklearn_curves(pos, neg)
    for key in ('auroc', 'aupr', 'fpr95'):
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


def test_curves_on_continuous_scores_within_1e_3_of_exact_sorting():
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(1.0, 1.0, 20000), rng.normal(0.0, 1.5, 40000)
    # signed scores: the negative half of the bins mirrors the positive
    ours = _curves(pos, neg)
    ref = _sklearn_curves(pos, neg)
    for key in ('auroc', 'aupr', 'fpr95'):
        assert abs(ours[key] - ref[key]) <= 1e-3, key


@pytest.mark.parametrize('pos,neg', [
    (np.full(10, 0.5), np.full(20, 0.5)),  # everything tied
    (np.array([0.9, 0.8]), np.array([0.1, 0.2, 0.3])),  # perfect separation
    (np.array([0.1]), np.array([0.9, 0.8])),  # perfectly wrong
])
def test_curves_adversarial(pos, neg):
    ours, ref = _curves(pos, neg), _sklearn_curves(pos, neg)
    for key in ('auroc', 'aupr', 'fpr95'):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


def test_curves_without_positives_or_negatives_are_nan():
    hist = _hist(torch.rand(10, dtype=torch.float64))
    empty = torch.zeros(F.NUM_SCORE_BINS, dtype=torch.float64)
    assert all(math.isnan(v) for v in F.binary_curve_metrics(empty, hist).values())
    assert all(math.isnan(v) for v in F.binary_curve_metrics(hist, empty).values())


def test_risk_coverage_equals_naive_sorting():
    rng = np.random.default_rng(4)
    n = 5000
    # distinct and 0.35% apart, more than a bin's 2**-10: one per bin
    scores = 2.0 ** (-rng.permutation(n) / 200)
    wrong = rng.random(n) < 0.2 + 0.6 * scores
    unit = torch.from_numpy(scores)
    ours = F.risk_coverage(_hist(unit[torch.from_numpy(wrong)]),
                           _hist(unit[torch.from_numpy(~wrong)]))
    aurc, eaurc = _naive_aurc(scores, wrong.astype(float))
    assert ours['aurc'] == pytest.approx(aurc, abs=1e-9)
    assert ours['eaurc'] == pytest.approx(eaurc, abs=1e-9)


def test_risk_coverage_with_ties_is_the_mean_over_every_tie_order():
    """Within a tie, every order of the pixels is equally likely."""
    scores = np.array([0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0])
    wrong = np.array([1, 0, 0, 1, 0, 1, 1, 0], bool)
    unit = torch.from_numpy(scores)
    ours = F.risk_coverage(_hist(unit[torch.from_numpy(wrong)]),
                           _hist(unit[torch.from_numpy(~wrong)]))
    orders = [np.array(o) for o in itertools.permutations(range(8))
              if np.all(np.diff(scores[list(o)]) >= 0)]
    expected = np.mean([_naive_aurc(np.arange(8.0), wrong[o].astype(float))[0]
                        for o in orders])
    assert len(orders) == 3 * 2 * 1 * 2 * 3 * 2 * 1
    assert ours['aurc'] == pytest.approx(expected, abs=1e-12)


def test_calibration_matches_torchmetrics():
    g = torch.Generator().manual_seed(6)
    prob = torch.softmax(torch.randn(20000, 7, generator=g) * 2, 1)
    target = torch.randint(0, 7, (20000, ), generator=g)
    conf, pred = prob.max(1)
    correct = (pred == target).double()
    bins = F.equal_bins(conf, 15)
    sums = [F.counts(bins, 15), F.counts(bins, 15, conf), F.counts(bins, 15, correct)]
    ece, mce = F.calibration_errors(*sums)
    # torchmetrics sums each bin in its input's dtype: float64, so that the
    # reference is not off by float32 summation over thousands of pixels
    ref_ece = MulticlassCalibrationError(7, n_bins=15, norm='l1')(prob.double(), target)
    ref_mce = MulticlassCalibrationError(7, n_bins=15, norm='max')(prob.double(), target)
    assert ece == pytest.approx(ref_ece.item(), abs=1e-6)
    assert mce == pytest.approx(ref_mce.item(), abs=1e-6)


def test_adaptive_ece_matches_equal_mass_bins():
    g = torch.Generator().manual_seed(7)
    conf = torch.rand(30000, generator=g, dtype=torch.float64) ** 0.3
    correct = (torch.rand(30000, generator=g, dtype=torch.float64) < conf).double()
    # binned as the metric bins it: by 1 − confidence
    ours = F.adaptive_calibration_error(
        _hist(1 - conf), _hist(1 - conf, conf), _hist(1 - conf, correct), num_bins=15)
    order = torch.argsort(conf)
    groups = torch.tensor_split(order, 15)
    naive = sum(len(i) / 30000 * abs(correct[i].mean() - conf[i].mean())
                for i in groups).item()
    assert ours == pytest.approx(naive, abs=1e-3)


def test_pavpu_by_hand():
    accurate = torch.zeros(4, dtype=torch.float64)
    inaccurate = torch.zeros(4, dtype=torch.float64)
    accurate[[0, 3]] = torch.tensor([6.0, 2.0], dtype=torch.float64)  # 6 certain, 2 uncertain
    inaccurate[[1, 2]] = torch.tensor([1.0, 3.0], dtype=torch.float64)  # 1 certain, 3 uncertain
    out = F.pavpu(accurate, inaccurate, threshold_bin=1)
    assert out['pavpu'] == pytest.approx((6 + 3) / 12)
    assert out['p_accurate_certain'] == pytest.approx(6 / 7)
    assert out['p_uncertain_inaccurate'] == pytest.approx(3 / 4)


def test_classwise_histogram_against_binning_every_probability():
    """The histogram that bins only p_c >= 1/B and fills bin 0 by subtraction
    equals binning all C x N probabilities."""
    g = torch.Generator().manual_seed(5)
    c, n, bins = 6, 500, 15
    prob = torch.softmax(torch.randn(c, n, generator=g) * 2, 0)
    label = torch.randint(0, c, (n, ), generator=g)
    out = F.classwise_histogram(prob, label, bins)
    expected = torch.zeros(3, c, bins, dtype=torch.float64)
    for k in range(c):
        for i in range(n):
            b = min(int(prob[k, i] * bins), bins - 1)
            expected[0, k, b] += 1
            expected[1, k, b] += float(prob[k, i])
        for i in torch.nonzero(label == k).flatten().tolist():
            expected[2, k, min(int(prob[k, i] * bins), bins - 1)] += 1
    assert torch.equal(out[0], expected[0]) and torch.equal(out[2], expected[2])
    # bin 0's sums are float32 sums of n values: relative error n·2**-24 at most
    assert torch.allclose(out[1], expected[1], rtol=n * 2**-24, atol=0)


@pytest.mark.parametrize('num_classes', [5, 300])  # uint8 and int32 weights
def test_first_argmax_is_argmax_with_its_ties(num_classes):
    g = torch.Generator().manual_seed(1)
    values = torch.randint(0, 3, (num_classes, 4000), generator=g).float()  # ties
    values[-1, :10] = 9.0  # the last class alone at the top
    values[:, 10:20] = 1.0  # every class tied
    top = values.amax(0)
    assert torch.equal(F.first_argmax(values, top), values.argmax(0))
    # a logit −0 tying a maximum +0 (first, then second), and one alone
    zeros = torch.tensor([[-0.0, -1.0, 0.0], [0.0, -0.0, -0.0]])
    px = F.pixel_statistics(zeros, torch.zeros(3, dtype=torch.long))
    assert px.correct.tolist() == [True, False, True] == (zeros.argmax(0) == 0).tolist()


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
@pytest.mark.parametrize('dtype', [torch.float16, torch.float32, torch.float64])
def test_all_finite_finds_one_bad_value(bad, dtype):
    values = torch.randn(3, 50, 7, generator=torch.Generator().manual_seed(0)).to(dtype)
    assert F.all_finite(values) and F.all_finite(values[:0])
    values[2, 49, 6] = bad
    assert not F.all_finite(values)
    assert F.all_finite(torch.arange(5))  # integers are always finite


def test_all_finite_when_the_sum_overflows_or_the_infinities_cancel():
    big = torch.full((4, 3), 3e38)  # finite; its sum overflows float32
    assert not bool(torch.isfinite(big.sum())) and F.all_finite(big)
    assert F.all_finite(torch.full((3,), 60000.0, dtype=torch.float16))
    assert not F.all_finite(torch.tensor([1.0, float('inf'), -float('inf')]))


def test_pixel_statistics_by_hand():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # (C=2, N=3)
    label = torch.tensor([0, 1, 1])
    px = F.pixel_statistics(logits, label)
    p0 = math.exp(2) / (math.exp(2) + 1)
    assert px.confidence.tolist() == pytest.approx([p0, 0.5, 0.5])
    # ties predict the first class, as argmax does
    assert px.correct.tolist() == [True, False, False]
    assert px.log_p_true.tolist() == pytest.approx([math.log(p0), math.log(0.5),
                                                    math.log(0.5)])
    assert px.brier.tolist() == pytest.approx([2 * (1 - p0) ** 2, 0.5, 0.5])
    h0 = -(p0 * math.log(p0) + (1 - p0) * math.log(1 - p0))
    assert px.entropy.tolist() == pytest.approx([h0, math.log(2), math.log(2)])


def test_score_bins_keep_the_order_and_a_relative_width_of_2_to_the_minus_10():
    magnitude = torch.logspace(-40, 9, 200_000, dtype=torch.float64)
    values = torch.sort(torch.cat([magnitude, -magnitude, torch.zeros(3)]))[0].float()
    bins = F.score_bins(values)
    assert bool((bins[1:] >= bins[:-1]).all())
    assert bins.min() >= 0 and bins.max() < F.NUM_SCORE_BINS
    # two values share a bin only when they agree to 2**-10 of their size
    # (2**-6 below 2**-40)
    for low, high, width in ((2.0**-40, 2.0**24, 2**-10), (2.0**-126, 2.0**-40, 2**-6)):
        inside = (values.abs() >= low) & (values.abs() < high)
        v, b = values[inside].double(), bins[inside]
        ratio = (v[1:] / v[:-1])[b[1:] == b[:-1]]
        assert inside.sum() > 1000 and float((ratio - 1).abs().max()) < width
    # non-negative scores: the positive half alone
    positive = values[values >= 0]
    assert torch.equal(F.score_bins(positive, signed=False),
                       F.score_bins(positive) - F.ZERO_BIN)
    assert F.score_bins(positive, signed=False).max() < F.NUM_NONNEGATIVE_BINS
    # negative scores mirror the positive ones around the zero bin, -0.0 and
    # float32's subnormals included
    tiny = torch.tensor([0.0, 1e-45, 1e-40, 2.0**-126])
    for v in (positive, tiny):
        assert torch.equal(F.score_bins(-v), 2 * F.ZERO_BIN - F.score_bins(v))
    assert (F.score_bins(tiny[:3]) == F.ZERO_BIN).all()


def test_score_bins_from_the_table_are_the_bins_computed_from_the_bits():
    """Every bit pattern's bin read from the prefix table equals the formula's
    on the whole word: random words (NaN and Inf patterns among them), every
    prefix with random low bits, and a strided float64 input."""
    g = torch.Generator().manual_seed(0)
    words = torch.randint(-2**31, 2**31, (1_000_000,), generator=g).to(torch.int32)
    prefixes = torch.arange(1 << F.PREFIX_BITS) << (32 - F.PREFIX_BITS)
    low = torch.randint(0, 1 << (32 - F.PREFIX_BITS), prefixes.shape, generator=g)
    for bits in (words, (prefixes | low).to(torch.int32)):
        scores = bits.view(torch.float32)
        assert torch.equal(F.score_bins(scores), F.bins_of_bits(bits))
        # non-negative bins: the magnitude's level, whatever the sign bit
        assert torch.equal(F.score_bins(scores, signed=False),
                           F.bins_of_bits(bits & 0x7FFFFFFF, signed=False))
    strided = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)[:, ::2]
    assert torch.equal(F.score_bins(strided),
                       F.bins_of_bits(strided.float().view(torch.int32)))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('num_classes', [19, 150])
def test_max_prob_and_entropy_to_1e_5_relative_down_to_1e_9(dtype, num_classes):
    """Against float64 log-softmax of the same logits, on pixels whose
    1 − max p runs from about 0.9 down to below 1e-9."""
    g = torch.Generator().manual_seed(num_classes)
    n = 40_000
    logits = (torch.randn(num_classes, n, generator=g)
              * torch.logspace(-1, 1.5, n)).to(dtype)
    ref = X.float64_scores(logits.double().numpy())
    px = F.pixel_statistics(logits, torch.zeros(n, dtype=torch.long))
    keep = ref['max_prob'] >= 1e-9
    assert ref['max_prob'][keep].min() < 2e-9 and keep.sum() > 0.9 * n
    for name, value in (('max_prob', px.max_prob), ('entropy', px.entropy)):
        relative = np.abs(value.double().numpy() - ref[name])[keep] / ref[name][keep]
        assert relative.max() < 1e-5, name


def test_stripe_histograms_of_all_scores_at_once_equal_each_scores_own():
    """add_stripe_sums bins every score in one scatter; split per score, each
    histogram equals the one binned on its own: misclassification, patches,
    OOD and aleatoric rows, a signed map, the two non-negative built-ins, and
    ignored pixels."""
    g = torch.Generator().manual_seed(3)
    C, h, w = 4, 9, 16  # 9 rows: a partial last row of 4x4 patches
    logits = torch.randn(C, h, w, generator=g) * 4
    label = torch.randint(0, C, (h, w), generator=g)
    label[0, :5] = 255
    # a signed map over many magnitudes, with zeros of both signs
    magnitude = 10.0 ** torch.randint(-30, 5, (h, w), generator=g).float()
    epistemic = torch.randn(h, w, generator=g) * magnitude
    epistemic[1, :2] = torch.tensor([0.0, -0.0])
    ood = torch.rand(h, w, generator=g) < 0.2
    aleatoric = (torch.rand(h, w, generator=g) < 0.3).float()
    scores = ('max_prob', 'entropy', 'epistemic')
    into = {}
    F.add_stripe_sums(into, logits, label, {'epistemic': epistemic}, ood, aleatoric,
                      scores=scores, num_ece_bins=15, patch_size=4, ignore_index=255)
    F.per_score_histograms(into, scores)

    valid = label != 255
    px = F.pixel_statistics(logits.reshape(C, -1), torch.where(valid, label, 0).reshape(-1))
    maps = dict(max_prob=px.max_prob.view(h, w), entropy=px.entropy.view(h, w),
                epistemic=epistemic)
    in_dist = valid & ~ood
    wrong = ~px.correct.view(h, w)
    count = F.patch_sums(valid.float(), 4)
    bad = (2 * F.patch_sums((~wrong & valid).float(), 4) < count)[count > 0]
    for name in scores:
        signed, score = F.is_signed(name), maps[name]
        assert into[f'score_sum/{name}'].item() == pytest.approx(
            score[valid].double().sum().item(), rel=1e-12)
        expected = {
            'mis': F.two_class_histogram(score[valid], wrong[valid], signed),
            'ood': F.two_class_histogram(score[ood | in_dist], ood[ood | in_dist], signed),
            'aleatoric': F.two_class_histogram(score[in_dist], aleatoric[in_dist] > 0, signed),
            'patch': F.two_class_histogram(
                (F.patch_sums(score * valid, 4)[count > 0] / count[count > 0]), bad, signed),
        }
        for key, histogram in expected.items():
            assert torch.equal(into[f'{key}/{name}'], histogram), (key, name)
            # its own memory: the stacked histograms are not kept alive
            kept = into[f'{key}/{name}']
            assert kept.untyped_storage().nbytes() == kept.numel() * kept.element_size()

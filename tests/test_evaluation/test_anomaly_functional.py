"""The anomaly protocols' maths: component sIoU, PPV and F1, FPR at a recall.

mmseg_uncert.evaluation.anomaly_functional against hand-worked values and
the set definitions of the SegmentMeIfYouCan paper.
"""
import numpy as np
import pytest
import torch
from scipy import ndimage

import mmseg_uncert  # noqa: F401
from mmseg_uncert.evaluation import anomaly_functional as A

VOID = 255


def _scores(lab: np.ndarray, pred: np.ndarray, min_gt: int = 0,
            min_pred: int = 0) -> A.ComponentScores:
    return A.component_scores(A.ground_truth_components(lab, min_gt), pred,
                              min_pred)


def test_prediction_touching_two_objects_gets_the_adjustment():
    lab = np.zeros((6, 10), np.uint8)
    lab[1:3, 1:3] = 1  # object k1: 4 pixels
    lab[1:3, 6:9] = 1  # object k2: 6 pixels
    pred = np.zeros(lab.shape, bool)
    pred[1:3, 1:9] = True  # one component of 16 pixels over both
    s = _scores(lab, pred)
    # The component has 16 pixels: 4 on k1, 6 on k2, 6 on background.
    # sIoU(k1) = |k1 ∩ K̂| / |(k1 ∪ K̂) \ A(k1)| with A(k1) = k2:
    #   k1 ∪ K̂ = 16 pixels, minus k2's 6 -> 10; intersection 4 -> 0.4
    #   (without A(k) it would be 4 / 16 = 0.25)
    # sIoU(k2) = 6 / (16 - 4) = 0.5
    # PPV = (4 + 6) / 16 = 0.625
    np.testing.assert_allclose(s.siou, [0.4, 0.5])
    np.testing.assert_allclose(s.ppv, [0.625])


def test_void_pixels_are_cut_out_of_predictions():
    lab = np.zeros((4, 10), np.uint8)
    lab[1:3, 1:3] = 1     # object: 4 pixels, columns 1-2
    lab[:, 5:7] = VOID    # void band, columns 5-6
    pred = np.zeros(lab.shape, bool)
    pred[1:3, 1:9] = True  # rows 1-2, columns 1-8
    s = _scores(lab, pred)
    # Without the void band the prediction splits into columns 1-4 (8 pixels,
    # meets the object) and columns 7-8 (4 pixels, background only).
    # sIoU = 4 / (4 + 4 background pixels of the first part) = 0.5;
    # the second part does not meet the object: not in K̂(k).
    # PPV: 4 / 8 = 0.5 and 0 / 4 = 0.
    np.testing.assert_allclose(s.siou, [0.5])
    np.testing.assert_allclose(s.ppv, [0.5, 0.0])


def test_image_without_objects_and_without_prediction():
    lab = np.zeros((5, 5), np.uint8)
    pred = np.zeros(lab.shape, bool)
    pred[1:3, 1:4] = True  # 6 pixels, all background
    s = _scores(lab, pred)
    assert s.siou.size == 0
    np.testing.assert_allclose(s.ppv, [0.0])
    counts = A.component_counts(s)
    # no TP anywhere, one FP at every τ (PPV 0 < τ)
    np.testing.assert_array_equal(counts[3:14], 0)
    np.testing.assert_array_equal(counts[14:], 1)
    # no prediction: every object is missed (sIoU 0), nothing predicted
    lab[2:4, 2:4] = 1
    s = _scores(lab, np.zeros(lab.shape, bool))
    np.testing.assert_allclose(s.siou, [0.0])
    assert s.ppv.size == 0


def test_size_thresholds_void_small_objects_and_drop_small_predictions():
    lab = np.zeros((8, 12), np.uint8)
    lab[1, 1:3] = 1      # small object: 2 pixels
    lab[4:7, 4:7] = 1    # object: 9 pixels
    pred = np.zeros(lab.shape, bool)
    pred[1, 1:3] = True  # exactly the small object
    pred[4:7, 4:7] = True
    pred[0, 10:12] = True  # 2-pixel false positive
    s = _scores(lab, pred, min_gt=3, min_pred=3)
    # the small object becomes void, so the prediction on it is outside the
    # evaluated region; the 2-pixel false positive is dropped
    np.testing.assert_allclose(s.siou, [1.0])
    np.testing.assert_allclose(s.ppv, [1.0])
    s = _scores(lab, pred)
    np.testing.assert_allclose(s.siou, [1.0, 1.0])
    # components in raster order: the false positive (row 0) first
    np.testing.assert_allclose(s.ppv, [0.0, 1.0, 1.0])


def _naive_components(lab: np.ndarray, pred: np.ndarray):
    """sIoU and PPV straight from the paper's set definitions."""
    eight = np.ones((3, 3))
    gt_ids, n_gt = ndimage.label(lab == 1, eight)
    pr_ids, n_pr = ndimage.label(pred & (lab != VOID), eight)
    gt_sets = [set(zip(*np.nonzero(gt_ids == k))) for k in range(1, n_gt + 1)]
    pr_sets = [set(zip(*np.nonzero(pr_ids == j))) for j in range(1, n_pr + 1)]
    anomaly = set().union(*gt_sets) if gt_sets else set()
    siou = []
    for k, gk in enumerate(gt_sets):
        hit = set().union(*[p for p in pr_sets if p & gk]) if pr_sets else set()
        others = anomaly - gk
        siou.append(len(gk & hit) / len((gk | hit) - others))
    ppv = [len(p & anomaly) / len(p) for p in pr_sets]
    return np.array(siou), np.array(ppv)


def test_component_scores_equal_the_set_definitions_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(40):
        lab = (ndimage.gaussian_filter(rng.normal(size=(18, 24)), 1.5) > 0.2
               ).astype(np.uint8)
        lab[ndimage.gaussian_filter(rng.normal(size=lab.shape), 1.5) > 0.35] = VOID
        pred = ndimage.gaussian_filter(rng.normal(size=lab.shape), 1.2) > 0.1
        siou, ppv = _naive_components(lab, pred)
        s = _scores(lab, pred)
        np.testing.assert_allclose(s.siou, siou)
        np.testing.assert_allclose(s.ppv, ppv)


def test_component_metrics_from_counts_by_hand():
    # image 1: sIoU [0.4, 0.5], PPV [0.625]; image 2: sIoU [0.8], PPV [0.2]
    counts = (A.component_counts(A.ComponentScores(np.array([0.4, 0.5]),
                                                   np.array([0.625])))
              + A.component_counts(A.ComponentScores(np.array([0.8]),
                                                     np.array([0.2]))))
    out = A.component_metrics(torch.from_numpy(counts), num_gt=3)
    assert out['sIoU'] == pytest.approx((0.4 + 0.5 + 0.8) / 3)
    assert out['PPV'] == pytest.approx((0.625 + 0.2) / 2)
    # per τ: TP = #sIoU ≥ τ, FN = 3 − TP, FP = #PPV < τ
    f1 = []
    for tau in np.linspace(0.25, 0.75, 11):
        tp = sum(v >= tau for v in (0.4, 0.5, 0.8))
        fp = sum(v < tau for v in (0.625, 0.2))
        f1.append(2 * tp / (2 * tp + (3 - tp) + fp))
    # e.g. τ = 0.25: TP 3, FP 1 (0.2) -> 6/7; τ = 0.75: TP 1, FN 2, FP 2 -> 2/6
    assert f1[0] == pytest.approx(6 / 7) and f1[-1] == pytest.approx(1 / 3)
    assert out['mean_F1'] == pytest.approx(np.mean(f1))


def test_nearest_recall_fpr_by_hand():
    # 17 anomaly pixels: 16 at 0.9, 1 at 0.1; 10 others: 2 at 0.5, 2 at 0.1,
    # 6 at 0.05. Thresholds 0.9 (recall 16/17, FPR 0), 0.5 (16/17, 0.2),
    # 0.1 (1, 0.4). Nearest 0.95 is 16/17 (0.0088 away), at its lowest
    # threshold -> 0.2; the first threshold reaching 0.95 gives 0.4.
    pos_scores = [0.9] * 16 + [0.1]
    neg_scores = [0.5] * 2 + [0.1] * 2 + [0.05] * 6
    score = torch.tensor(pos_scores + neg_scores, dtype=torch.float64)
    positive = torch.tensor([True] * 17 + [False] * 10)
    from mmseg_uncert.evaluation.functional import (binary_curve_metrics,
                                                    two_class_histogram)
    pos, neg = two_class_histogram(score, positive)
    assert A.fpr_at_nearest_tpr(pos, neg) == pytest.approx(0.2)
    assert binary_curve_metrics(pos, neg)['fpr95'] == pytest.approx(0.4)

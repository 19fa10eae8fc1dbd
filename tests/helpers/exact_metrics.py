"""Reference values of the uncertainty and anomaly metrics, computed the plain
way: float64, every pixel sorted or compared one by one, scikit-learn where it
has the metric. Slow and memory-hungry on purpose: they check the streaming,
binned metrics of the package in the tests and in
``benchmarks/metric_exactness.py``."""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

SIOU_TAUS = np.linspace(0.25, 0.75, 11)


def float64_scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """``max_prob`` = 1 − max p and ``entropy`` = −Σ p log p of logits
    (C, ...) from float64 log-softmax."""
    log_p = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), 0)
    max_prob = -torch.expm1(log_p.max(0).values)
    entropy = -(log_p.exp() * log_p).sum(0)
    return dict(max_prob=max_prob.numpy(), entropy=entropy.numpy())


def fpr_at_first_tpr(positive: np.ndarray, score: np.ndarray,
                     level: float = 0.95) -> float:
    """FPR at the first threshold (from the top) whose TPR reaches ``level``."""
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, level)])


def fpr_at_nearest_tpr(positive: np.ndarray, score: np.ndarray,
                       level: float = 0.95) -> float:
    """FPR where the TPR is nearest ``level``, the curve stopped at full
    recall, a tie going to the higher recall (StreetHazards)."""
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    stop = int(np.flatnonzero(tpr >= 1)[0])
    distance = np.abs(tpr[:stop + 1] - level)
    return float(fpr[np.flatnonzero(distance == distance.min())[-1]])


def binary_metrics(positive: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR (average precision) and FPR95, scikit-learn."""
    return dict(auroc=roc_auc_score(positive, score),
                aupr=average_precision_score(positive, score),
                fpr95=fpr_at_first_tpr(positive, score))


def aurc(wrong: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AURC = mean over k = 1..N of the error rate of the k lowest-score
    pixels, tied scores taken in random order (the expectation: inside a run
    of n tied pixels with e errors, the j-th adds e/n errors), and E-AURC =
    AURC − the AURC of the errors ranked last. Pixel by pixel, float64."""
    n = wrong.size
    values, inverse, sizes = np.unique(score, return_inverse=True, return_counts=True)
    errors = np.bincount(inverse, weights=wrong.astype(np.float64))
    order = np.argsort(score, kind='stable')
    group = inverse[order]
    before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    errors_before = np.concatenate([[0.0], np.cumsum(errors)[:-1]])
    k = np.arange(1, n + 1, dtype=np.float64)
    expected = errors_before[group] + (k - before[group]) * errors[group] / sizes[group]
    value = float(np.mean(expected / k))
    num_wrong = float(wrong.sum())
    optimal = float(np.mean(np.maximum(k - (n - num_wrong), 0.0) / k))
    return dict(aurc=value, eaurc=value - optimal)


def pavpu(accurate: np.ndarray, score: np.ndarray,
          threshold: float) -> dict[str, float]:
    """PAvPU, p(accurate | certain), p(uncertain | inaccurate); uncertain
    means score > threshold."""
    uncertain = score > threshold
    n_ac = np.sum(accurate & ~uncertain)
    n_ic = np.sum(~accurate & ~uncertain)
    n_iu = np.sum(~accurate & uncertain)
    return dict(pavpu=(n_ac + n_iu) / accurate.size,
                p_accurate_certain=n_ac / (n_ac + n_ic),
                p_uncertain_inaccurate=n_iu / (n_ic + n_iu))


def patch_values(values: np.ndarray, valid: np.ndarray, patch: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` over the valid pixels of each patch, patch by
    patch, and whether the patch has any valid pixel."""
    h, w = values.shape
    means, has = [], []
    for y in range(0, h, patch):
        for x in range(0, w, patch):
            v = valid[y:y + patch, x:x + patch]
            has.append(v.any())
            means.append(values[y:y + patch, x:x + patch][v].mean() if v.any() else 0.0)
    return np.array(means), np.array(has)


# ------------------------------------------------------------ SegmentMeIfYouCan
def best_f1_threshold(anomaly: np.ndarray, score: np.ndarray) -> float:
    """The score t whose prediction ``score >= t`` has the best pixel F1,
    every distinct score a threshold, the highest t among equal F1."""
    order = np.argsort(-score, kind='stable')
    s, y = score[order], anomaly[order]
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # end of each run
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    f1 = 2 * tp / (2 * tp + fp + (y.sum() - tp))
    return float(s[last][int(np.argmax(f1))])  # argmax: the first, highest t


def components(label: np.ndarray, prediction: np.ndarray, min_gt: int,
               min_pred: int, void: int = 255) -> tuple[list, list]:
    """sIoU of every ground-truth component and PPV of every predicted one,
    by SegmentMeIfYouCan's set definitions and in the order its code applies
    the size rules: void pixels leave the prediction, whose 8-connected
    components under ``min_pred`` pixels are dropped; then ground-truth
    components under ``min_gt`` pixels become void, and everything is counted
    on the pixels left (a predicted component with none left is not one)."""
    eight = np.ones((3, 3))
    pr_ids, n_pr = ndimage.label(prediction & (label != void), eight)
    gt_ids, n_gt = ndimage.label(label == 1, eight)
    evaluated = label != void
    for k in range(1, n_gt + 1):
        if np.sum(gt_ids == k) < min_gt:
            evaluated[gt_ids == k] = False
    gt_sets = [set(np.flatnonzero(gt_ids == k).tolist())
               for k in range(1, n_gt + 1) if np.sum(gt_ids == k) >= min_gt]
    pr_sets = []
    for j in range(1, n_pr + 1):
        member = pr_ids == j
        if member.sum() >= min_pred and (member & evaluated).any():
            pr_sets.append(set(np.flatnonzero(member & evaluated).tolist()))
    anomaly = set().union(*gt_sets) if gt_sets else set()
    siou = []
    for gk in gt_sets:
        hit = set().union(*[p for p in pr_sets if p & gk]) if pr_sets else set()
        siou.append(len(gk & hit) / len((gk | hit) - (anomaly - gk)))
    ppv = [len(p & anomaly) / len(p) for p in pr_sets]
    return siou, ppv


def component_metrics(labels: list[np.ndarray], predictions: list[np.ndarray],
                      min_gt: int, min_pred: int) -> dict[str, float]:
    """Run-level sIoU (mean over ground-truth components), PPV (mean over
    predicted ones) and mean F1 over τ of 2 TP / (2 TP + FN + FP), with
    TP = #sIoU ≥ τ, FN = #sIoU < τ, FP = #PPV < τ summed over images."""
    siou, ppv = [], []
    for label, prediction in zip(labels, predictions):
        s, p = components(label, prediction, min_gt, min_pred)
        siou += s
        ppv += p
    siou, ppv = np.array(siou), np.array(ppv)
    f1 = []
    for tau in SIOU_TAUS:
        tp, fn, fp = np.sum(siou >= tau), np.sum(siou < tau), np.sum(ppv < tau)
        f1.append(2 * tp / (2 * tp + fn + fp))
    return dict(sIoU=float(siou.mean()) if siou.size else float('nan'),
                PPV=float(ppv.mean()) if ppv.size else float('nan'),
                mean_F1=float(np.mean(f1)))

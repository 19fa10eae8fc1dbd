"""AnomalyMetric: the SegmentMeIfYouCan, Fishyscapes and StreetHazards protocols.

Against hand-worked values and scikit-learn; also the parts it is built
from: mmseg_uncert.evaluation.metrics.stored_anomaly_maps (the score maps
kept until the best-F1 threshold is known) and
mmseg_uncert.evaluation.metrics.sample_checks (bad inputs named).
"""
import math
import os

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from mmseg.registry import METRICS

import mmseg_uncert  # noqa: F401
from mmseg_uncert.evaluation import AnomalyMetric

from helpers import exact_metrics as X
from helpers.anomaly_samples import _metric, _random_run, _run, _sample

VOID = 255


def test_best_f1_threshold_is_chosen_and_a_fixed_one_is_used():
    gt = np.zeros((20, 20), np.uint8)
    gt[2:6, 2:6] = 1                       # object: 16 pixels
    gt[18:, :] = VOID
    score = np.full(gt.shape, 0.05)
    score[2:6, 2:6] = 0.85
    score[10:13, 10:13] = 0.55             # false blob: 9 pixels
    score[18:, :] = 0.99                   # void: never counts
    # The curve's thresholds are the scores. Pixel F1 (score ≥ t): object
    # only at t = 0.85 -> 1; object + blob at 0.55 -> 2*16 / (2*16 + 9) =
    # 0.78; everything at 0.05. Best: 0.85, reported as the largest float32
    # below its bin, so that score > δ is the object.
    out = _run(_metric(), [_sample(gt, score)])
    delta = out['smiyc/threshold/u']
    assert 0.85 * (1 - 2**-10) < delta < np.float32(0.85)
    assert not np.float32(delta) < np.float32(0.85) * (1 - 2**-10)
    assert out['smiyc/sIoU/u'] == 1.0
    assert out['smiyc/PPV/u'] == 1.0
    assert out['smiyc/mean_F1/u'] == 1.0
    # fixed δ = 0.5 (score > δ): object (sIoU 1, PPV 1) and blob (PPV 0):
    # TP 1, FN 0, FP 1 at every τ -> F1 = 2/3
    out = _run(_metric(component_thresholds=dict(u=0.5)), [_sample(gt, score)])
    assert out['smiyc/threshold/u'] == 0.5
    assert out['smiyc/sIoU/u'] == 1.0
    assert out['smiyc/PPV/u'] == 0.5
    assert out['smiyc/mean_F1/u'] == pytest.approx(2 / 3)


def _pooled(gts, scores):
    y = np.concatenate([g[g != VOID] == 1 for g in gts])
    s = np.concatenate([sc[g != VOID] for g, sc in zip(gts, scores)])
    return y, s


@pytest.mark.parametrize('seed', [0, 1])
def test_pooled_pixel_metrics_equal_sklearn(seed):
    gts, scores = _random_run(seed)
    y, s = _pooled(gts, scores)
    samples = [_sample(g, sc, img=f'{i}.png')
               for i, (g, sc) in enumerate(zip(gts, scores))]
    smiyc = _run(_metric(component_metrics=False), samples)
    fishy = _run(_metric(protocol='fishyscapes', component_metrics=False),
                 samples)
    # SMIYC's AUPRC since August 2023: Σ Δrecall · precision from the
    # (recall 0, precision 1) point, i.e. average precision
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    fpr95 = fpr[np.searchsorted(tpr, 0.95)]
    assert smiyc['smiyc/AUPRC/u'] == pytest.approx(
        average_precision_score(y, s), abs=1e-12)
    assert smiyc['smiyc/FPR95/u'] == pytest.approx(fpr95, abs=1e-12)
    assert fishy['fishyscapes/AP/u'] == pytest.approx(
        average_precision_score(y, s), abs=1e-12)
    assert fishy['fishyscapes/AUROC/u'] == pytest.approx(roc_auc_score(y, s),
                                                         abs=1e-12)
    assert fishy['fishyscapes/FPR95/u'] == pytest.approx(fpr95, abs=1e-12)


def _nearest_recall_fpr(y: np.ndarray, s: np.ndarray) -> float:
    """FPR where recall is nearest 0.95, the curve stopped at full recall, a
    tie going to the higher recall (StreetHazards' anom_utils.py)."""
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    stop = int(np.flatnonzero(tpr >= 1)[0])
    distance = np.abs(tpr[:stop + 1] - 0.95)
    return fpr[np.flatnonzero(distance == distance.min())[-1]]


def test_streethazards_averages_per_image_like_a_naive_loop():
    gts, scores = _random_run(3, num_images=5)
    gts[1][gts[1] == 1] = 0          # no anomaly: skipped
    gts[2][:] = 1                    # only anomaly: skipped
    samples = [_sample(g, sc, img=f'{i}.png')
               for i, (g, sc) in enumerate(zip(gts, scores))]
    out = _run(_metric(protocol='streethazards'), samples)
    rows = []
    for g, sc in zip(gts, scores):
        y, s = g[g != VOID] == 1, sc[g != VOID]
        if y.all() or not y.any():
            continue
        rows.append((roc_auc_score(y, s), average_precision_score(y, s),
                     _nearest_recall_fpr(y, s)))
    expected = np.mean(rows, axis=0)
    assert out['streethazards/num_images'] == 3
    assert out['streethazards/AUROC/u'] == pytest.approx(expected[0], abs=1e-12)
    assert out['streethazards/AUPR/u'] == pytest.approx(expected[1], abs=1e-12)
    assert out['streethazards/FPR95/u'] == pytest.approx(expected[2], abs=1e-12)
    assert not any(key.startswith('smiyc') for key in out)


def test_builtin_scores_from_logits_and_registry():
    metric = METRICS.build(dict(type='AnomalyMetric', scores=['max_prob', 'entropy'],
                                min_gt_component_size=0,
                                min_pred_component_size=0))
    torch.manual_seed(0)
    logits = torch.randn(5, 16, 16)
    gt = np.zeros((16, 16), np.uint8)
    gt[4:8, 4:8] = 1
    prob = logits.softmax(0)
    max_prob = (1 - prob.max(0).values).numpy().ravel()
    entropy = (-(prob * prob.log()).sum(0)).numpy().ravel()
    out = _run(metric, [dict(img_path='a.png',
                             gt_ood=dict(data=torch.from_numpy(gt)[None]),
                             seg_logits=dict(data=logits))])
    y = gt.ravel() == 1
    fpr, tpr, _ = roc_curve(y, max_prob, drop_intermediate=False)
    # scores within 2**-10 of each other share a bin and tie: within 1e-3
    assert out['smiyc/FPR95/max_prob'] == pytest.approx(
        fpr[np.searchsorted(tpr, 0.95)], abs=1e-3)
    assert out['smiyc/AUPRC/entropy'] == pytest.approx(
        average_precision_score(y, entropy), abs=1e-3)
    assert set(out) == {f'smiyc/{k}/{s}' for s in ('max_prob', 'entropy')
                        for k in ('AUPRC', 'FPR95', 'sIoU', 'PPV', 'mean_F1',
                                  'threshold')}


def test_bad_inputs_are_named():
    gt = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match=r"unknown score\(s\) \['std'\] for "
                       r"image f\.png; available: \['u'\]"):
        _metric(scores=['std']).process({}, [_sample(gt, gt, img='f.png')])
    with pytest.raises(ValueError, match=r"image f\.png: pred_uncertainty\['u'\] "
                       r'has shape \(3, 4\), gt_ood has \(4, 4\)'):
        _metric().process({}, [_sample(gt, np.zeros((3, 4)), img='f.png')])
    with pytest.raises(ValueError, match='image f.png has no gt_ood'):
        _metric().process({}, [dict(img_path='f.png',
                                    pred_uncertainty=dict(u=torch.zeros(4, 4)))])
    bad = gt.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match=r'gt_ood has values \[7\]'):
        _metric().process({}, [_sample(bad, gt, img='f.png')])
    with pytest.raises(ValueError, match="unknown protocol 'roadanomaly'"):
        AnomalyMetric(protocol='roadanomaly')
    with pytest.raises(ValueError, match=r"component_thresholds names \['std'\]"):
        _metric(component_thresholds=dict(std=0.5))


def test_no_object_anywhere_gives_nan_component_means():
    gt = np.zeros((8, 8), np.uint8)
    score = np.zeros((8, 8))
    score[1:3, 1:3] = 0.9
    out = _run(_metric(component_thresholds=dict(u=0.5)), [_sample(gt, score)])
    assert math.isnan(out['smiyc/sIoU/u'])
    assert math.isnan(out['smiyc/AUPRC/u'])
    assert out['smiyc/PPV/u'] == 0.0
    assert out['smiyc/mean_F1/u'] == 0.0  # FP only: 2·0 / (0 + 0 + 1)


def _blob_run(seed: int, num_images: int = 3, shape=(40, 56)):
    """Images with smooth anomaly blobs, void pixels and scores on multiples
    of 1/1024 (every score its own bin; many pixels share a score)."""
    rng = np.random.default_rng(seed)
    gts, scores = [], []
    for _ in range(num_images):
        field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
        gt = (field > 0.12).astype(np.uint8)
        gt[-3:] = VOID
        noisy = field + 0.08 * rng.normal(size=shape)
        scores.append(np.clip(np.round((noisy + 0.3) * 1024), 0, 1023) / 1024)
        gts.append(gt)
    return gts, scores


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_components_at_the_runs_exact_best_f1_threshold(seed):
    """δ is the best pixel F1 of the pooled curve (every distinct score a
    threshold), and sIoU / PPV / mean F1 are those of `score > δ` by the set
    definitions, size rules included, over a run of several images."""
    gts, scores = _blob_run(seed)
    samples = [_sample(g, sc, img=f'{i}.png') for i, (g, sc) in enumerate(zip(gts, scores))]
    out = _run(_metric(min_gt_component_size=6, min_pred_component_size=9), samples)
    y, s = _pooled(gts, scores)
    t = X.best_f1_threshold(y, s)
    delta = out['smiyc/threshold/u']
    assert np.float32(delta) < np.float32(t) and np.nextafter(
        np.float32(delta), np.float32(1)) == np.float32(t)
    expected = X.component_metrics(gts, [sc >= t for sc in scores], 6, 9)
    for key in ('sIoU', 'PPV', 'mean_F1'):
        assert out[f'smiyc/{key}/u'] == pytest.approx(expected[key], abs=1e-12), key


def _confident_run(seed: int, num_classes: int = 19, scale: float = 8.0):
    """Logits of a confident model (1 − max p far below 1e-4 on most pixels),
    unsure on anomaly blobs; the void band at the bottom."""
    g = torch.Generator().manual_seed(seed)
    samples, gts, logits = [], [], []
    for i in range(3):
        z = torch.nn.functional.avg_pool2d(torch.randn(num_classes, 48, 64, generator=g)[None],
                                           5, 1, 2, count_include_pad=False)[0] * 12.5
        gt = torch.zeros(48, 64, dtype=torch.uint8)
        y0, x0 = torch.randint(0, 30, (2, ), generator=g).tolist()
        gt[y0:y0 + 14, x0:x0 + 20] = 1
        gt[-4:] = VOID
        lg = torch.where(gt.bool(), z, scale * z)
        samples.append(dict(img_path=f'{i}.png', gt_ood=dict(data=gt[None]),
                            seg_logits=dict(data=lg)))
        gts.append(gt.numpy())
        logits.append(lg.numpy())
    return samples, gts, logits


def test_confident_msp_and_entropy_every_protocol_within_1e_3_of_the_definitions():
    samples, gts, logits = _confident_run(5)
    refs = [X.float64_scores(lg) for lg in logits]
    assert np.mean(np.concatenate([r['max_prob'].ravel() for r in refs]) < 1e-4) > 0.3
    out = {}
    for protocol in ('smiyc', 'fishyscapes', 'streethazards'):
        metric = AnomalyMetric(protocol=protocol, scores=['max_prob', 'entropy'],
                               min_gt_component_size=20, min_pred_component_size=30)
        out.update(_run(metric, samples))
    for name in ('max_prob', 'entropy'):
        y = np.concatenate([g[g != VOID] == 1 for g in gts])
        s = np.concatenate([r[name][g != VOID] for g, r in zip(gts, refs)])
        curve = X.binary_metrics(y, s)
        t = X.best_f1_threshold(y, s)
        comps = X.component_metrics(gts, [r[name] >= t for r in refs], 20, 30)
        per_image = np.mean([(roc_auc_score(g[g != VOID] == 1, r[name][g != VOID]),
                              average_precision_score(g[g != VOID] == 1, r[name][g != VOID]),
                              X.fpr_at_nearest_tpr(g[g != VOID] == 1, r[name][g != VOID]))
                             for g, r in zip(gts, refs)], axis=0)
        expected = {'smiyc/AUPRC': curve['aupr'], 'smiyc/FPR95': curve['fpr95'],
                    'fishyscapes/AP': curve['aupr'], 'fishyscapes/AUROC': curve['auroc'],
                    'fishyscapes/FPR95': curve['fpr95'],
                    'streethazards/AUROC': per_image[0], 'streethazards/AUPR': per_image[1],
                    'streethazards/FPR95': per_image[2]}
        expected.update({f'{p}/{k}': v for k, v in comps.items()
                         for p in ('smiyc', 'fishyscapes')})
        for key, value in expected.items():
            assert abs(out[f'{key}/{name}'] - value) <= 1e-3, (key, name)


def test_a_run_without_anomaly_pixels_is_nan_with_a_warning(monkeypatch):
    from mmseg_uncert.evaluation.metrics import anomaly_metric
    said = []
    monkeypatch.setattr(anomaly_metric, 'print_log', lambda msg, **_: said.append(msg))
    gt = np.zeros((16, 16), np.uint8)
    score = np.random.default_rng(0).random((16, 16))
    out = _run(_metric(), [_sample(gt, score)])
    for key in ('AUPRC', 'FPR95', 'sIoU', 'mean_F1', 'threshold'):
        assert math.isnan(out[f'smiyc/{key}/u']), key
    assert any('no anomaly pixel' in m for m in said)


def test_the_stored_maps_are_deleted_after_the_run():
    gts, scores = _blob_run(4, num_images=2)
    metric = _metric()
    metric.process({}, [_sample(gts[0], scores[0])])
    metric.process({}, [_sample(gts[1], scores[1])])
    folder = metric._stored._dir.name
    assert len(os.listdir(folder)) == 2
    metric.evaluate(2)
    assert not os.path.exists(folder)

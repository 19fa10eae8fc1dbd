"""UncertaintyMetric against scikit-learn, torchmetrics and naive computations.

Also the curves it writes (mmseg_uncert.evaluation.curves), drawn by
mmseg_uncert.visualization.calibration_plots.
"""
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics.classification import MulticlassCalibrationError

from mmseg_uncert.evaluation import UncertaintyMetric
from mmseg_uncert.evaluation import functional as F
from mmseg_uncert.visualization import plot_metric_curves

from helpers import exact_metrics as X
from helpers.metric_samples import make_sample, random_samples
from helpers.naive_metrics import _naive_aurc


def _evaluate(metric: UncertaintyMetric, samples: list, batch: int = 2) -> dict:
    for i in range(0, len(samples), batch):
        metric.process({}, samples[i:i + batch])
    return metric.evaluate(len(samples))


def _flatten(samples: list) -> dict:
    """Every pixel of the samples, with the naive quantities."""
    probs, labels, oods, ales, stds = [], [], [], [], []
    for s in samples:
        p = torch.softmax(s['seg_logits']['data'].double(), 0)
        probs.append(p.flatten(1).T)
        labels.append(s['gt_sem_seg']['data'].flatten())
        oods.append(s['gt_ood']['data'].flatten())
        ales.append(s['gt_aleatoric']['data'].flatten())
        stds.append(s['pred_uncertainty']['std'].flatten())
    return dict(prob=torch.cat(probs).numpy(), label=torch.cat(labels).numpy(),
                ood=torch.cat(oods).numpy(), ale=torch.cat(ales).numpy(),
                std=torch.cat(stds).double().numpy())


def test_metric_against_independent_implementations():
    samples = random_samples(0)
    metric = UncertaintyMetric(scores=('max_prob', 'entropy', 'std'))
    out = _evaluate(metric, samples)
    px = _flatten(samples)
    valid = px['label'] != 255
    p, y = px['prob'][valid], px['label'][valid]
    pred = p.argmax(1)
    wrong = pred != y
    entropy = -(p * np.log(p)).sum(1)
    # calibration
    ref_ece = MulticlassCalibrationError(5, n_bins=15, norm='l1')(
        torch.from_numpy(p), torch.from_numpy(y))
    # the metric's float32 confidence may cross a bin edge that float64's does
    # not: each such pixel moves ECE by at most 2 / N
    assert out['ECE'] == pytest.approx(ref_ece.item(), abs=1e-6 + 10 * 2 / len(y))
    assert out['NLL'] == pytest.approx(-np.log(p[np.arange(len(y)), y]).mean())
    onehot = np.eye(5)[y]
    assert out['Brier'] == pytest.approx(((p - onehot) ** 2).sum(1).mean())
    # misclassification, per score
    for name, score in [('max_prob', 1 - p.max(1)), ('entropy', entropy),
                        ('std', px['std'][valid])]:
        assert abs(out[f'auroc/{name}'] - roc_auc_score(wrong, score)) <= 1e-3
        assert abs(out[f'aupr/{name}']
                   - average_precision_score(wrong, score)) <= 1e-3
        aurc, eaurc = _naive_aurc(score, wrong.astype(float))
        assert abs(out[f'aurc/{name}'] - aurc) <= 1e-3
        assert abs(out[f'eaurc/{name}'] - eaurc) <= 1e-3
        # PAvPU at the default threshold: the mean score
        t = score.mean()
        assert out[f'pavpu_threshold/{name}'] == pytest.approx(t)
        unc = score > t
        n_ac, n_iu = np.sum(~wrong & ~unc), np.sum(wrong & unc)
        assert abs(out[f'pavpu/{name}'] - (n_ac + n_iu) / len(y)) <= 2e-3
    # OOD: OOD pixels against valid in-distribution ones
    ood = px['ood'] == 1
    ent_all = -(px['prob'] * np.log(px['prob'])).sum(1)
    sel = ood | (valid & ~ood)
    assert abs(out['ood_auroc/entropy']
               - roc_auc_score(ood[sel], ent_all[sel])) <= 1e-3
    # aleatoric regions among valid in-distribution pixels
    amb = px['ale'][valid] > 0
    assert abs(out['aleatoric_auroc/entropy'] - roc_auc_score(amb, entropy)) <= 1e-3


def _naive_classwise(prob: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Mean over classes of the ECE of p_c against 1[y = c]."""
    eces = []
    for c in range(prob.shape[1]):
        p = prob[:, c].astype(np.float64)
        b = np.minimum((prob[:, c] * np.float32(bins)).astype(np.int64), bins - 1)
        hit = (y == c).astype(np.float64)
        eces.append(sum(np.sum(b == k) / len(y)
                        * abs(hit[b == k].mean() - p[b == k].mean())
                        for k in range(bins) if np.any(b == k)))
    return float(np.mean(eces))


@pytest.mark.parametrize('ignored', [False, True])
def test_large_image_over_stripes_and_threads_against_naive(ignored):
    """A 19-class image of several stripes, shared over two threads: the
    class-wise sums (bin 0 by subtraction), ECE, NLL and Brier against a
    pixel-by-pixel computation, with and without ignored pixels."""
    g = torch.Generator().manual_seed(11)
    c, h, w = 19, 100, 700  # 70 000 pixels: 5 stripes of 2**14
    logits = torch.randn(c, h, w, generator=g) * 3
    label = torch.randint(0, c, (h, w), generator=g)
    agree = torch.rand(h, w, generator=g) < 0.7
    label[agree] = logits.argmax(0)[agree]
    if ignored:
        label[torch.rand(h, w, generator=g) < 0.2] = 255
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = _evaluate(UncertaintyMetric(), [make_sample(logits, label)])
    finally:
        torch.set_num_threads(threads)
    prob = torch.softmax(logits.double(), 0).flatten(1).T.numpy()
    y = label.flatten().numpy()
    valid = y != 255
    p64, y = prob[valid], y[valid]
    # the metric's float32 p_c may fall in the other bin than float64's where
    # it lies within float32 rounding of a bin edge (about 2 of the 1.3 M
    # values here); each such value moves cwECE by at most 2 / (N C)
    assert out['cwECE'] == pytest.approx(_naive_classwise(p64, y),
                                         abs=10 * 2 / (len(y) * c))
    ref_ece = MulticlassCalibrationError(c, n_bins=15, norm='l1')(
        torch.from_numpy(p64), torch.from_numpy(y))
    assert out['ECE'] == pytest.approx(ref_ece.item(), abs=1e-6 + 10 * 2 / len(y))
    onehot = np.eye(c)[y]
    assert out['Brier'] == pytest.approx(((p64 - onehot) ** 2).sum(1).mean(),
                                         rel=1e-6)
    log_p = torch.log_softmax(logits.double(), 0).flatten(1).T.numpy()[valid]
    assert out['NLL'] == pytest.approx(-log_p[np.arange(len(y)), y].mean(),
                                       rel=1e-6)


def test_tied_classes_predict_the_first_as_argmax_does():
    logits = torch.zeros(4, 4, 4)  # every class ties
    first = make_sample(logits, torch.zeros(4, 4, dtype=torch.long))
    out = _evaluate(UncertaintyMetric(), [first])
    assert out['ECE'] == pytest.approx(1 - 0.25)  # all right at confidence 1/4
    later = make_sample(logits, torch.full((4, 4), 2, dtype=torch.long))
    out = _evaluate(UncertaintyMetric(), [later])
    assert out['ECE'] == pytest.approx(0.25)  # all wrong at confidence 1/4


def test_a_change_of_class_count_is_named():
    metric = UncertaintyMetric()
    label = torch.zeros(4, 4, dtype=torch.long)
    metric.process({}, [make_sample(torch.randn(3, 4, 4), label, 'a.png')])
    with pytest.raises(ValueError, match='b.png.*4 classes.*had 3'):
        metric.process({}, [make_sample(torch.randn(4, 4, 4), label, 'b.png')])


def test_patch_pavpu_against_a_loop():
    samples = random_samples(1, n=2, h=9, w=10)  # partial patches at edges
    out = _evaluate(UncertaintyMetric(scores=('entropy', )), samples)
    n_ac = n_au = n_ic = n_iu = 0
    t = out['pavpu_threshold/entropy']
    for s in samples:
        p = torch.softmax(s['seg_logits']['data'].double(), 0)
        label = s['gt_sem_seg']['data'][0]
        ent = -(p * p.log()).sum(0)
        for y0 in range(0, 9, 4):
            for x0 in range(0, 10, 4):
                lab = label[y0:y0 + 4, x0:x0 + 4]
                valid = lab != 255
                if not valid.any():
                    continue
                acc = (p.argmax(0)[y0:y0 + 4, x0:x0 + 4] == lab)[valid].double().mean()
                unc = ent[y0:y0 + 4, x0:x0 + 4][valid].mean() > t
                accurate = acc >= 0.5
                n_ac += int(accurate and not unc)
                n_au += int(accurate and unc)
                n_ic += int(not accurate and not unc)
                n_iu += int(not accurate and unc)
    expected = (n_ac + n_iu) / (n_ac + n_au + n_ic + n_iu)
    assert out['patch_pavpu/entropy'] == pytest.approx(expected, abs=1e-9)


def test_all_correct_all_wrong_one_class():
    logits = torch.zeros(3, 4, 4)
    logits[1] = 5.0  # predicts class 1 everywhere
    right = make_sample(logits, torch.ones(4, 4, dtype=torch.long))
    out = _evaluate(UncertaintyMetric(), [right])
    # per-pixel values are float32, as the network's output: ~1e-7 absolute
    assert out['NLL'] == pytest.approx(
        -math.log(math.exp(5) / (math.exp(5) + 2)), abs=2e-7)
    assert math.isnan(out['auroc/entropy'])  # no wrong pixel to detect
    assert out['aurc/entropy'] == pytest.approx(0.0)
    wrong = make_sample(logits, torch.zeros(4, 4, dtype=torch.long))
    out = _evaluate(UncertaintyMetric(), [wrong])
    conf = math.exp(5) / (math.exp(5) + 2)
    assert out['ECE'] == pytest.approx(conf)  # accuracy 0, confidence conf
    assert out['aurc/entropy'] == pytest.approx(1.0)
    assert out['eaurc/entropy'] == pytest.approx(0.0)


def test_no_valid_pixel_batch_is_skipped_and_empty_run_is_nan(caplog):
    samples = random_samples(2, n=2)
    empty = make_sample(torch.randn(5, 12, 16), torch.full((12, 16), 255))
    with_empty = _evaluate(UncertaintyMetric(), [empty, *samples, empty])
    without = _evaluate(UncertaintyMetric(), samples)
    assert with_empty == pytest.approx(without, nan_ok=True)
    out = _evaluate(UncertaintyMetric(), [empty])
    assert math.isnan(out['ECE']) and math.isnan(out['NLL'])


def test_bad_inputs_are_named():
    logits = torch.randn(3, 4, 4)
    logits[0, 1, 1] = float('nan')
    label = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match='frame_3.png.*NaN or Inf'):
        UncertaintyMetric().process({}, [make_sample(logits, label, 'frame_3.png')])
    logits[0, 1, 1] = -float('inf')
    with pytest.raises(ValueError, match='frame_3.png.*NaN or Inf'):
        UncertaintyMetric().process({}, [make_sample(logits, label, 'frame_3.png')])
    with pytest.raises(ValueError, match=r"frame_4.png: pred_uncertainty\['std'\].*NaN or Inf"):
        UncertaintyMetric(scores=('std', )).process({}, [make_sample(
            torch.randn(3, 4, 4), label, 'frame_4.png',
            pred_uncertainty=dict(std=torch.full((1, 4, 4), float('inf'))))])
    with pytest.raises(ValueError, match=r"unknown score\(s\) \['epistemic'\].*"
                       r"available: \['entropy', 'max_prob', 'std'\]"):
        UncertaintyMetric(scores=('entropy', 'epistemic')).process({}, [make_sample(
            torch.randn(3, 4, 4), label, pred_uncertainty=dict(std=torch.rand(1, 4, 4)))])
    with pytest.raises(ValueError, match=r'\(2, 2\).*\(4, 4\)'):
        UncertaintyMetric(scores=('std', )).process({}, [make_sample(
            torch.randn(3, 4, 4), label, pred_uncertainty=dict(std=torch.rand(1, 2, 2)))])
    bad = torch.zeros(4, 4, dtype=torch.long)
    bad[0, 0] = 7
    with pytest.raises(ValueError, match=r'road_9.png.*labels \[7\] outside \[0, 3\)'
                       r'.*ignore_index \(255\)'):
        UncertaintyMetric().process({}, [make_sample(torch.randn(3, 4, 4), bad,
                                                     'road_9.png')])


def test_output_dir_gets_the_curves_data_and_their_plots(tmp_path):
    samples = random_samples(3)
    out = _evaluate(UncertaintyMetric(scores=('entropy', 'std'),
                                      output_dir=str(tmp_path)), samples)
    data = json.load(open(tmp_path / 'reliability_diagram.json'))
    px = _flatten(samples)
    assert sum(data['count']) == int((px['label'] != 255).sum())
    filled = [i for i, c in enumerate(data['count']) if c]
    ece = sum(data['count'][i] / sum(data['count'])
              * abs(data['accuracy'][i] - data['confidence'][i]) for i in filled)
    assert ece == pytest.approx(out['ECE'])
    # the metric writes data; the visualization draws it
    assert not list(tmp_path.glob('*.png'))
    written = plot_metric_curves(str(tmp_path))
    names = ('reliability_diagram.png', 'risk_coverage_entropy.png', 'risk_coverage_std.png')
    assert sorted(osp.basename(p) for p in written) == sorted(names)
    for name in names:
        assert osp.getsize(tmp_path / name) > 1000
    # the risk-coverage curve's data: the naive curve of the pixels sorted by
    # std (most certain first), at the points the histogram resolves
    curve = json.load(open(tmp_path / 'risk_coverage_std.json'))
    valid = px['label'] != 255
    wrong = (px['prob'].argmax(1) != px['label'])[valid]
    order = np.argsort(px['std'][valid], kind='stable')
    naive_risk = np.cumsum(wrong[order]) / np.arange(1, valid.sum() + 1)
    assert curve['coverage'][-1] == pytest.approx(1.0)
    assert curve['risk'][-1] == pytest.approx(wrong.mean())
    assert np.all(np.diff(curve['coverage']) > 0)
    for cov, risk in zip(curve['coverage'], curve['risk']):
        k = round(cov * valid.sum())
        assert risk == pytest.approx(naive_risk[k - 1], abs=1e-9)


@pytest.mark.parametrize('dtype, tolerance', [(torch.float64, 1e-6), (torch.float16, 5e-3)])
def test_logits_and_maps_of_other_precisions_give_the_float32_result(dtype, tolerance):
    """float64 logits (a model moved to double) and float16 ones (an AMP
    model's output) give the float32 numbers, to float16's rounding."""
    samples = random_samples(4, c=7, h=32, w=48)
    scores = ('max_prob', 'entropy', 'std')
    ref = _evaluate(UncertaintyMetric(scores=scores), samples)
    cast = [dict(s, seg_logits=dict(data=s['seg_logits']['data'].to(dtype)),
                 pred_uncertainty=dict(std=s['pred_uncertainty']['std'].to(dtype)))
            for s in samples]
    out = _evaluate(UncertaintyMetric(scores=scores), cast)
    assert out.keys() == ref.keys()
    n = sum(int((s['gt_sem_seg']['data'] != 255).sum()) for s in samples)
    for key, value in ref.items():
        # MCE is the gap of one (here sparse) bin: a few pixels that cross a
        # bin edge by float16's rounding move it
        allowed = 10 * tolerance if key == 'MCE' else tolerance
        if '/' in key and dtype == torch.float64:
            # a ranking key: float32 and float64 scores of a few pixels fall in
            # neighbouring score bins; each pixel that changes bin moves the
            # key by about 1 / N at most
            allowed = max(allowed, 20 / n)
        assert out[key] == pytest.approx(value, abs=allowed, nan_ok=True), key


def test_channels_last_logits_give_the_contiguous_result():
    """A model run in channels_last gives strided (C, H, W) logits; with every
    pixel valid no copy makes them contiguous before the metric's stripes."""
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 5, 12, 16, generator=g) * 3
    label = torch.randint(0, 5, (12, 16), generator=g)
    strided = logits.contiguous(memory_format=torch.channels_last)[0]
    assert not strided.is_contiguous()
    got = _evaluate(UncertaintyMetric(), [make_sample(strided, label)])
    expected = _evaluate(UncertaintyMetric(), [make_sample(logits[0].contiguous(), label)])
    assert got.keys() == expected.keys()
    # the strided layout may sum the classes in another order: each pixel's
    # float32 values then differ by at most about C·2**-24 (3e-7 here)
    for key in ('ECE', 'MCE', 'cwECE', 'aECE', 'NLL', 'Brier'):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    prob = torch.softmax(logits[0].reshape(5, -1), 0)
    strided_prob = prob.T.contiguous().T
    assert not strided_prob.is_contiguous()
    a = F.classwise_histogram(strided_prob, label.reshape(-1), 15)
    b = F.classwise_histogram(prob, label.reshape(-1), 15)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert torch.allclose(a[1], b[1], rtol=prob.shape[1] * 2**-24, atol=0)


def _confident_samples(num_classes: int, seed: int, scale: float = 8.0) -> list[dict]:
    """Labels drawn from softmax(z), logits scale·z (over-confident), OOD
    rectangles where the logits are z, the true label entropy as the
    aleatoric map where it is above its median, and an own map."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(2):
        z = torch.nn.functional.avg_pool2d(torch.randn(num_classes, 48, 64, generator=g)[None],
                                           5, 1, 2, count_include_pad=False)[0] * 12.5
        prob = z.softmax(0)
        label = torch.multinomial(prob.reshape(num_classes, -1).T, 1, generator=g).reshape(48, 64)
        ood = torch.zeros(48, 64, dtype=torch.long)
        ood[10:22, 20:40] = 1
        label[ood.bool()] = 255
        entropy = -(prob * prob.clamp_min(1e-30).log()).sum(0)
        ale = torch.where(entropy > entropy.median(), entropy, 0.0)
        logits = torch.where(ood.bool(), z, scale * z)
        top2 = logits.topk(2, 0).values
        own = torch.exp(-(top2[0] - top2[1]) + 0.5 * torch.randn(48, 64, generator=g))
        samples.append(make_sample(logits, label, f'{i}.png', gt_ood=ood, gt_aleatoric=ale,
                                   pred_uncertainty=dict(own=own[None])))
    return samples


@pytest.mark.parametrize('num_classes', [19, 150])
def test_confident_model_every_ranking_key_within_1e_3_of_exact(num_classes):
    """The docs' tolerance claim, on an over-confident model: every ranking
    key of every score against scikit-learn and float64 loops."""
    samples = _confident_samples(num_classes, seed=num_classes)
    out = _evaluate(UncertaintyMetric(scores=('max_prob', 'entropy', 'own')), samples)
    wrong, ood_pos, ale_pos, bad_patch = [], [], [], []
    parts = {name: dict(mis=[], ood=[], ale=[], patch=[]) for name in ('max_prob', 'entropy', 'own')}
    for s in samples:
        logits = s['seg_logits']['data']
        label = s['gt_sem_seg']['data'][0].numpy()
        ood = s['gt_ood']['data'][0].numpy().astype(bool)
        valid = label != 255
        in_dist = valid & ~ood
        w = logits.argmax(0).numpy() != label
        accuracy, has = X.patch_values((~w | ~valid).astype(float), valid, 4)
        wrong.append(w[valid])
        ood_pos.append(ood[ood | in_dist])
        ale_pos.append(s['gt_aleatoric']['data'][0].numpy()[in_dist] > 0)
        bad_patch.append(accuracy[has] < 0.5)
        scores = X.float64_scores(logits.numpy())
        scores['own'] = s['pred_uncertainty']['own'][0].double().numpy()
        for name, score in scores.items():
            parts[name]['mis'].append(score[valid])
            parts[name]['ood'].append(score[ood | in_dist])
            parts[name]['ale'].append(score[in_dist])
            parts[name]['patch'].append(X.patch_values(score, valid, 4)[0][has])
    wrong, ood_pos, ale_pos, bad_patch = map(np.concatenate, (wrong, ood_pos, ale_pos, bad_patch))
    share_tiny = np.mean(np.concatenate(parts['max_prob']['mis']) < 1e-4)
    assert share_tiny > 0.25  # below the first edge of equal-width 2**14 bins
    for name, p in parts.items():
        s = {k: np.concatenate(v) for k, v in p.items()}
        expected = {f'{k}/{name}': v for k, v in X.binary_metrics(wrong, s['mis']).items()}
        expected.update({f'{k}/{name}': v for k, v in X.aurc(wrong, s['mis']).items()})
        t = s['mis'].mean()
        expected.update({f'{k}/{name}': v for k, v in X.pavpu(~wrong, s['mis'], t).items()})
        expected.update({f'patch_{k}/{name}': v
                         for k, v in X.pavpu(~bad_patch, s['patch'], t).items()})
        expected.update({f'ood_{k}/{name}': v
                         for k, v in X.binary_metrics(ood_pos, s['ood']).items()})
        expected[f'aleatoric_auroc/{name}'] = X.binary_metrics(ale_pos, s['ale'])['auroc']
        for key, value in expected.items():
            assert abs(out[key] - value) <= 1e-3, (key, out[key], value)

"""The metrics against exact references, on confident models and heavy ties.

    python benchmarks/metric_exactness.py                  # -> benchmarks/results/metric_exactness.json
    python benchmarks/metric_exactness.py --quick --out X.json

Every ranking key of ``UncertaintyMetric`` (misclassification, OOD and
aleatoric-region keys, pixel and patch PAvPU) and every key of the three
``AnomalyMetric`` protocols is compared with the value computed the plain way
(``tests/helpers/exact_metrics.py``: float64 scores from log-softmax, every
pixel sorted, scikit-learn for AUROC / AP / the ROC curve, the benchmarks'
set definitions for the component metrics at the exact best-F1 threshold).
The goal is 1e-3 on every key.

Cases (seeded; 19 classes unless named): labels drawn from softmax(z), the
model's logits k·z, z smooth over the image (so that anomalies and patches are
regions, not single pixels):

* ``mild``: k = 1 (a calibrated, unsure model: what the metrics were
  first checked on);
* ``overconfident``: k = 8, the first case of the issue that found the
  equal-width bins wanting (1 − max p down to about 1e-9);
* ``overconfident_150``: the same with 150 classes (ADE20K's count);
* ``extreme``: k = 14 (1 − max p below 1e-4 on 38% of the pixels, below
  1e-12 on 4%, below float32's smallest number on 1%);
* ``ties``: k = 8 with logits rounded to integers and the own map to 20
  levels: many pixels share exactly one score;
* ``float32_underflow``: k = 20, outside the goal: on some pixels
  1 − max p is below float32's smallest number (1e-45), so the model's own
  float32 softmax gives exactly 1 there and the metric ties those pixels at
  0, while the float64 reference still orders them. It shows what that costs.

Each case scores ``max_prob``, ``entropy`` and ``own``, a map of the model's
own (positive, spanning several decades, like an epistemic map). It also
measures the precision of ``max_prob`` and ``entropy`` against float64 for
float32 and float16 logits, on every pixel with 1 − max p ≥ 1e-9.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import sys

import numpy as np
import torch
import torch.nn.functional as nnf
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tests', 'helpers'))
import exact_metrics as X  # noqa: E402

from mmseg_uncert.evaluation import AnomalyMetric, UncertaintyMetric  # noqa: E402
from mmseg_uncert.evaluation import functional as F  # noqa: E402

TOLERANCE = 1e-3
CASES = dict(mild=(19, 1.0, False), overconfident=(19, 8.0, False),
             overconfident_150=(150, 8.0, False), extreme=(19, 14.0, False),
             ties=(19, 8.0, True), float32_underflow=(19, 20.0, False))
#: cases outside the goal: where float32 itself cannot tell the scores apart
BEYOND_FLOAT32 = ('float32_underflow', )
SCORES = ('max_prob', 'entropy', 'own')


def smooth_normal(shape: tuple[int, ...], g: torch.Generator, width: int = 5) -> torch.Tensor:
    """Unit-variance noise (…, H, W) smoothed over a ``width`` box."""
    noise = torch.randn(*shape, generator=g)
    flat = noise.reshape(-1, 1, *shape[-2:])
    smooth = nnf.avg_pool2d(flat, width, stride=1, padding=width // 2,
                            count_include_pad=False) * width
    return smooth.reshape(shape)


def make_image(num_classes: int, scale: float, ties: bool, g: torch.Generator,
               h: int, w: int) -> dict:
    """One image: logits, label (255 on OOD), gt_ood, gt_aleatoric, own map."""
    z = smooth_normal((num_classes, h, w), g) * 1.5
    true_prob = z.softmax(0)
    label = torch.multinomial(true_prob.reshape(num_classes, -1).T, 1,
                              generator=g).reshape(h, w)
    # anomalies: rectangles where the model is unsure (its logits are z)
    ood = torch.zeros(h, w, dtype=torch.long)
    for _ in range(3):
        bh, bw = int(torch.randint(h // 8, h // 4, (1, ), generator=g)), \
            int(torch.randint(w // 10, w // 5, (1, ), generator=g))
        y0 = int(torch.randint(0, h - bh, (1, ), generator=g))
        x0 = int(torch.randint(0, w - bw, (1, ), generator=g))
        ood[y0:y0 + bh, x0:x0 + bw] = 1
    logits = torch.where(ood.bool(), z, scale * z)
    if ties:
        logits = logits.round()
    label[ood.bool()] = 255
    entropy = -(true_prob * true_prob.clamp_min(1e-30).log()).sum(0)
    aleatoric = torch.where(entropy > entropy.median(), entropy, 0.0)
    top2 = logits.topk(2, 0).values
    own = torch.exp(-(top2[0] - top2[1]) + 0.5 * torch.randn(h, w, generator=g))
    if ties:
        own = (own.clamp(max=1) * 20).round() / 20
    return dict(logits=logits, label=label, ood=ood, aleatoric=aleatoric, own=own)


def sample_of(image: dict, index: int) -> dict:
    return dict(img_path=f'image_{index}.png', seg_logits=dict(data=image['logits']),
                gt_sem_seg=dict(data=image['label'][None]),
                gt_ood=dict(data=image['ood'][None]),
                gt_aleatoric=dict(data=image['aleatoric'][None]),
                pred_uncertainty=dict(own=image['own'][None]))


def reference_scores(image: dict) -> dict[str, np.ndarray]:
    scores = X.float64_scores(image['logits'].numpy())
    scores['own'] = image['own'].numpy().astype(np.float64)
    return scores


# ---------------------------------------------------------------- UncertaintyMetric
def uncertainty_reference(images: list[dict], patch: int = 4) -> dict[str, float]:
    """Every ranking key of UncertaintyMetric, the plain way."""
    pooled: dict[str, list] = {k: [] for k in ('wrong', 'ood_pos', 'ale_pos', 'patch_bad')}
    score_parts = {name: dict(mis=[], ood=[], ale=[], patch=[]) for name in SCORES}
    for image in images:
        label = image['label'].numpy()
        valid = label != 255
        ood = image['ood'].numpy().astype(bool)
        in_dist = valid & ~ood
        wrong = image['logits'].argmax(0).numpy() != label
        pooled['wrong'].append(wrong[valid])
        scored = ood | in_dist
        pooled['ood_pos'].append(ood[scored])
        pooled['ale_pos'].append(image['aleatoric'].numpy()[in_dist] > 0)
        accuracy, has = X.patch_values((~wrong | ~valid).astype(np.float64), valid, patch)
        pooled['patch_bad'].append(accuracy[has] < 0.5)
        for name, score in reference_scores(image).items():
            score_parts[name]['mis'].append(score[valid])
            score_parts[name]['ood'].append(score[scored])
            score_parts[name]['ale'].append(score[in_dist])
            means, _ = X.patch_values(score, valid, patch)
            score_parts[name]['patch'].append(means[has])
    cat = {k: np.concatenate(v) for k, v in pooled.items()}
    out = {}
    for name, parts in score_parts.items():
        s = {k: np.concatenate(v) for k, v in parts.items()}
        for key, value in X.binary_metrics(cat['wrong'], s['mis']).items():
            out[f'{key}/{name}'] = value
        for key, value in X.aurc(cat['wrong'], s['mis']).items():
            out[f'{key}/{name}'] = value
        threshold = float(s['mis'].mean())
        for key, value in X.pavpu(~cat['wrong'], s['mis'], threshold).items():
            out[f'{key}/{name}'] = value
        for key, value in X.pavpu(~cat['patch_bad'], s['patch'], threshold).items():
            out[f'patch_{key}/{name}'] = value
        for key, value in X.binary_metrics(cat['ood_pos'], s['ood']).items():
            out[f'ood_{key}/{name}'] = value
        out[f'aleatoric_auroc/{name}'] = X.binary_metrics(cat['ale_pos'], s['ale'])['auroc']
    return out


def uncertainty_ours(images: list[dict]) -> dict[str, float]:
    metric = UncertaintyMetric(scores=SCORES)
    for i, image in enumerate(images):
        metric.process({}, [sample_of(image, i)])
    return metric.evaluate(len(images))


# ---------------------------------------------------------------- AnomalyMetric
def anomaly_sample(image: dict, index: int) -> dict:
    gt = image['ood'].clone()
    gt[-8:] = 255  # a void band, as the benchmarks' masks have
    return dict(img_path=f'image_{index}.png', seg_logits=dict(data=image['logits']),
                gt_ood=dict(data=gt[None]))


def anomaly_reference(images: list[dict], min_gt: int, min_pred: int) -> dict[str, float]:
    out = {}
    gts = [anomaly_sample(image, i)['gt_ood']['data'][0].numpy()
           for i, image in enumerate(images)]
    scores = [reference_scores(image) for image in images]
    for name in ('max_prob', 'entropy'):
        y = np.concatenate([g[g != 255] == 1 for g in gts])
        s = np.concatenate([sc[name][g != 255] for g, sc in zip(gts, scores)])
        curve = X.binary_metrics(y, s)
        out[f'smiyc/AUPRC/{name}'] = out[f'fishyscapes/AP/{name}'] = curve['aupr']
        out[f'smiyc/FPR95/{name}'] = out[f'fishyscapes/FPR95/{name}'] = curve['fpr95']
        out[f'fishyscapes/AUROC/{name}'] = curve['auroc']
        t = X.best_f1_threshold(y, s)
        out[f'threshold/{name}'] = t
        comps = X.component_metrics(gts, [sc[name] >= t for sc in scores], min_gt, min_pred)
        for key, value in comps.items():
            out[f'smiyc/{key}/{name}'] = out[f'fishyscapes/{key}/{name}'] = value
        rows = []
        for g, sc in zip(gts, scores):
            yi, si = g[g != 255] == 1, sc[name][g != 255]
            if yi.all() or not yi.any():
                continue
            rows.append((roc_auc_score(yi, si), average_precision_score(yi, si),
                         X.fpr_at_nearest_tpr(yi, si)))
        for key, value in zip(('AUROC', 'AUPR', 'FPR95'), np.mean(rows, axis=0)):
            out[f'streethazards/{key}/{name}'] = float(value)
    return out


def anomaly_ours(images: list[dict], min_gt: int, min_pred: int) -> dict[str, float]:
    out = {}
    for protocol in ('smiyc', 'fishyscapes', 'streethazards'):
        metric = AnomalyMetric(protocol=protocol, scores=('max_prob', 'entropy'),
                               min_gt_component_size=min_gt,
                               min_pred_component_size=min_pred)
        for i, image in enumerate(images):
            metric.process({}, [anomaly_sample(image, i)])
        out.update(metric.evaluate(len(images)))
    return out


# ---------------------------------------------------------------- score precision
def score_precision(seed: int, pixels: int = 200_000) -> dict[str, dict]:
    """Largest relative error of max_prob and entropy against float64 of the
    same logits, for pixels with 1 − max p in [1e-9, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for dtype in (torch.float32, torch.float16):
        for num_classes in (19, 150):
            z = torch.randn(num_classes, pixels, generator=g)
            # scales spread 1 − max p from about 0.9 down to below 1e-12
            scale = torch.logspace(-1, 1.5, pixels).to(torch.float32)
            logits = (z * scale).to(dtype)
            ref = X.float64_scores(logits.double().numpy())
            ours = F.pixel_statistics(logits, torch.zeros(pixels, dtype=torch.long))
            keep = ref['max_prob'] >= 1e-9
            rel = {}
            for name, value in (('max_prob', ours.max_prob), ('entropy', ours.entropy)):
                err = np.abs(value.double().numpy() - ref[name]) / ref[name]
                rel[name] = float(err[keep].max())
            out[f'{str(dtype).split(".")[-1]}_{num_classes}_classes'] = dict(
                pixels_checked=int(keep.sum()),
                smallest_max_prob=float(ref['max_prob'][keep].min()),
                max_relative_error=rel)
    return out


# ------------------------------------------------------------ other conventions
def conventions(images: list[dict]) -> dict[str, dict]:
    """How much the conventions of other code change the numbers, on the same
    pixels (exact float64 values of each convention, from its definition):

    * AURC as the mean risk over coverages k/N (ours, Geifman et al.) against
      the trapezoid over coverages [1/N, 1] divided by 1 − 1/N
      (torch-uncertainty's ``AURC``);
    * FPR95 at the first threshold reaching TPR 0.95 (scikit-learn,
      Fishyscapes, SegmentMeIfYouCan) against the threshold whose TPR is
      nearest 0.95 (StreetHazards' ``anom_utils``, torch-uncertainty's
      ``FPR95``);
    * SegmentMeIfYouCan's AUPRC since 2023 (average precision) against the
      trapezoid over the precision-recall points it used before;
    * OOD AUROC pooled over the run's pixels against its mean per image
      (StreetHazards averages per image).
    """
    wrong, mis, ood_pos, ood_score, per_image = [], [], [], [], []
    for image in images:
        label = image['label'].numpy()
        valid = label != 255
        ood = image['ood'].numpy().astype(bool)
        scored = ood | (valid & ~ood)
        max_prob = reference_scores(image)['max_prob']
        wrong.append((image['logits'].argmax(0).numpy() != label)[valid])
        mis.append(max_prob[valid])
        ood_pos.append(ood[scored])
        ood_score.append(max_prob[scored])
        per_image.append(roc_auc_score(ood[scored], max_prob[scored]))
    wrong, mis = np.concatenate(wrong), np.concatenate(mis)
    ood_pos, ood_score = np.concatenate(ood_pos), np.concatenate(ood_score)
    order = np.argsort(mis, kind='stable')
    risk = np.cumsum(wrong[order]) / np.arange(1, wrong.size + 1)
    trapezoid_aurc = (risk.sum() - (risk[0] + risk[-1]) / 2) / (wrong.size - 1)
    precision, recall, _ = precision_recall_curve(ood_pos, ood_score)
    return dict(
        aurc_max_prob=dict(mean_over_coverages=X.aurc(wrong, mis)['aurc'],
                           trapezoid_over_1_over_n_to_1=float(trapezoid_aurc)),
        fpr95_max_prob=dict(first_reaching_0_95=X.fpr_at_first_tpr(wrong, mis),
                            nearest_0_95=X.fpr_at_nearest_tpr(wrong, mis)),
        ood_auprc_max_prob=dict(average_precision=average_precision_score(ood_pos, ood_score),
                                trapezoid_before_2023=float(-np.trapezoid(precision[:-1],
                                                                          recall[:-1]))),
        ood_auroc_max_prob=dict(pooled=roc_auc_score(ood_pos, ood_score),
                                mean_per_image=float(np.mean(per_image))))


def compare(ours: dict, reference: dict) -> dict:
    rows = {}
    for key, value in reference.items():
        if key.startswith('threshold/'):
            continue
        rows[key] = dict(ours=ours[key], reference=value,
                         difference=abs(ours[key] - value))
    worst = max(rows.values(), key=lambda r: r['difference'])
    return dict(keys=rows, max_difference=worst['difference'],
                within_tolerance=all(r['difference'] <= TOLERANCE for r in rows.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='2 small images per case')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'metric_exactness.json'))
    args = parser.parse_args()
    images, (h, w) = (2, (64, 128)) if args.quick else (4, (256, 512))
    min_gt, min_pred = (10, 50) if args.quick else (100, 500)
    result = dict(date=datetime.date.today().isoformat(), torch=torch.__version__,
                  tolerance=TOLERANCE, images=images, size=[h, w],
                  anomaly_min_component_sizes=[min_gt, min_pred], cases={})
    for seed, (case, (num_classes, scale, ties)) in enumerate(CASES.items()):
        g = torch.Generator().manual_seed(seed)
        data = [make_image(num_classes, scale, ties, g, h, w) for _ in range(images)]
        ref = X.float64_scores(torch.cat([d['logits'].reshape(num_classes, -1)
                                          for d in data], 1).numpy())['max_prob']
        uncertainty = compare(uncertainty_ours(data), uncertainty_reference(data))
        anomaly_ref = anomaly_reference(data, min_gt, min_pred)
        anomaly_out = anomaly_ours(data, min_gt, min_pred)
        anomaly = compare(anomaly_out, anomaly_ref)
        anomaly['thresholds'] = {
            name: dict(ours=anomaly_out[f'smiyc/threshold/{name}'],
                       exact_best_f1=anomaly_ref[f'threshold/{name}'])
            for name in ('max_prob', 'entropy')}
        if case in ('mild', 'overconfident'):
            result.setdefault('conventions', {})[case] = conventions(data)
        result['cases'][case] = dict(
            num_classes=num_classes, logit_scale=scale, integer_logits=ties,
            share_of_pixels_with_max_prob_below_1e_4=float(np.mean(ref < 1e-4)),
            share_of_pixels_with_max_prob_below_1e_12=float(np.mean(ref < 1e-12)),
            share_of_pixels_below_float32=float(np.mean(ref < 1.4e-45)),
            smallest_max_prob=float(ref.min()),
            uncertainty_metric=uncertainty, anomaly_metric=anomaly)
        print(f'{case:18s} UncertaintyMetric max |diff| {uncertainty["max_difference"]:.2e}'
              f'  AnomalyMetric max |diff| {anomaly["max_difference"]:.2e}', flush=True)
    result['score_precision'] = score_precision(seed=100)
    for key, row in result['score_precision'].items():
        print(f'{key:22s} max relative error {row["max_relative_error"]}')
    result['all_within_tolerance'] = all(
        c[m]['within_tolerance'] for name, c in result['cases'].items()
        for m in ('uncertainty_metric', 'anomaly_metric') if name not in BEYOND_FLOAT32)
    result['cases_outside_the_goal'] = list(BEYOND_FLOAT32)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)
    print('all keys within', TOLERANCE, ':', result['all_within_tolerance'], '->', args.out)


if __name__ == '__main__':
    main()

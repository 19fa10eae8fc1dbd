"""Model summaries of an ensemble and a member, for the report tests."""
from mmseg_uncert.workflows.distillation_report import summarise


def _model(name, miou, ece, seconds, misc, ood, ambiguous):
    val = {'mIoU': miou, 'ECE': ece, 'seconds_per_image': seconds}
    val.update({f'auroc/{k}': v for k, v in misc.items()})
    val.update({f'aleatoric_auroc/{k}': v for k, v in ambiguous.items()})
    return summarise(name, val, {f'ood_auroc/{k}': v for k, v in ood.items()})


ENSEMBLE = _model('ensemble', 78.0, 0.030, 0.30,
                  dict(max_prob=0.93, epistemic=0.90, aleatoric=0.92),
                  dict(max_prob=0.88, epistemic=0.95, aleatoric=0.85),
                  dict(epistemic=0.60, aleatoric=0.80))
MEMBER = _model('member', 77.0, 0.020, 0.10, dict(max_prob=0.90, entropy=0.89),
                dict(max_prob=0.86, entropy=float('nan')), dict(max_prob=0.7))

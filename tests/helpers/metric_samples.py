"""Deterministic data samples, shaped as mmseg's evaluator hands them to metrics."""
import torch


def make_sample(logits: torch.Tensor, label: torch.Tensor, img: str = 'img.png',
                **extra) -> dict:
    """A data sample dict: seg_logits, gt_sem_seg, and gt_* / pred_* extras."""
    sample = dict(img_path=img, seg_logits=dict(data=logits),
                  gt_sem_seg=dict(data=label[None]))
    for key, value in extra.items():
        sample[key] = dict(data=value[None]) if key.startswith('gt_') else value
    return sample


def random_samples(seed: int, n: int = 4, c: int = 5, h: int = 12,
                   w: int = 16) -> list[dict]:
    """Samples with ignored pixels, OOD and aleatoric masks and a std map."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        logits = torch.randn(c, h, w, generator=g) * 2
        label = torch.randint(0, c, (h, w), generator=g)
        # the label agrees with the prediction often, as for a real model
        agree = torch.rand(h, w, generator=g) < 0.6
        label[agree] = logits.argmax(0)[agree]
        label[torch.rand(h, w, generator=g) < 0.1] = 255
        ood = (torch.rand(h, w, generator=g) < 0.15).long()
        label[ood.bool()] = 255
        ale = torch.rand(h, w, generator=g) * (torch.rand(h, w, generator=g) < 0.3)
        std = torch.rand(h, w, generator=g) * 3
        samples.append(make_sample(logits, label, f'img_{i}.png', gt_ood=ood,
                                   gt_aleatoric=ale,
                                   pred_uncertainty=dict(std=std[None])))
    return samples

"""Vector scaling: a scale and a bias per class."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from mmseg.registry import MODELS

from .calibration_set import CalibrationSet


@MODELS.register_module()
class VectorScaling(nn.Module):
    """z'_c = w_c z_c + b_c, p = softmax(z') (Guo et al., "On Calibration of
    Modern Neural Networks", ICML 2017: matrix scaling with a diagonal
    matrix).

    Unlike a temperature it can change the argmax (a class's bias moves its
    decision boundary), so mIoU may move too. Fitted by the mean NLL over
    every valid pixel of a held-out split, full batch, with L-BFGS (strong
    Wolfe line search, at most 50 iterations: 2C parameters converge in
    far fewer), each evaluation one pass over the split (float32 per
    image, the images' sums in float64).

    Args:
        num_classes: C.
        scale, bias: fitted values (C each), or None for w = 1, b = 0.
    """

    def __init__(self, num_classes: int, scale: Sequence[float] | None = None,
                 bias: Sequence[float] | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f'VectorScaling: num_classes must be >= 1, got {num_classes}')
        for key, value in (('scale', scale), ('bias', bias)):
            if value is not None and len(value) != num_classes:
                raise ValueError(f'VectorScaling: {key} has {len(value)} values, '
                                 f'num_classes is {num_classes}')
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.tensor(
            list(scale) if scale is not None else [1.0] * num_classes))
        self.bias = nn.Parameter(torch.tensor(
            list(bias) if bias is not None else [0.0] * num_classes))

    def forward(self, logits: Tensor, image: Tensor | None = None) -> Tensor:
        """w ⊙ z + b of logits (B, C, H, W); ``image`` unused."""
        if logits.shape[1] != self.num_classes:
            raise ValueError(f'VectorScaling for {self.num_classes} classes got logits '
                             f'with {logits.shape[1]}')
        shape = (1, -1) + (1, ) * (logits.dim() - 2)
        return (logits * self.scale.to(logits.dtype).view(shape)
                + self.bias.to(logits.dtype).view(shape))

    def fit(self, data: CalibrationSet, max_iter: int = 50) -> dict[str, float]:
        """Fit w and b on ``data``. Returns ``dict(nll, evaluations)``.

        Raises:
            ValueError: the split has no valid pixel, or the fit gave
                non-finite values.
        """
        data.check_valid()
        if data.num_classes != self.num_classes:
            raise ValueError(f'VectorScaling for {self.num_classes} classes, split '
                             f'{data.name!r} has {data.num_classes}')
        device = self.scale.device
        scale = self.scale.detach().float().clone().requires_grad_(True)
        bias = self.bias.detach().float().clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([scale, bias], lr=1.0, max_iter=max_iter,
                                      tolerance_grad=1e-7, tolerance_change=1e-10,
                                      history_size=20, line_search_fn='strong_wolfe')
        evaluations = 0

        def mean_nll(backward: bool) -> Tensor:
            total = torch.zeros((), dtype=torch.float64, device=device)
            # one image's graph at a time: gradients accumulate, memory stays
            # one image's
            for logits, label in data.valid_pixels():
                with torch.set_grad_enabled(backward):
                    z = logits.to(device, torch.float32) * scale + bias
                    loss = torch.nn.functional.cross_entropy(
                        z, label.to(device), reduction='sum') / data.num_valid
                if backward:
                    loss.backward()
                total += loss.detach().double()
            return total

        def closure() -> Tensor:
            nonlocal evaluations
            evaluations += 1
            optimizer.zero_grad()
            return mean_nll(backward=True)

        optimizer.step(closure)
        nll = mean_nll(backward=False).item()
        if not (math.isfinite(nll) and torch.isfinite(scale).all()
                and torch.isfinite(bias).all()):
            raise ValueError(f'vector scaling on split {data.name!r} diverged: NLL '
                             f'{nll}, scales {scale.tolist()}, biases {bias.tolist()}')
        with torch.no_grad():
            self.scale.copy_(scale)
            self.bias.copy_(bias)
        print_log(f'vector scaling on {data.name}: NLL {nll:.4f}, scales '
                  f'{[round(v, 3) for v in scale.tolist()]}, biases '
                  f'{[round(v, 3) for v in bias.tolist()]}', logger='current')
        return dict(nll=nll, evaluations=evaluations)

"""Temperature scaling: one temperature for every pixel and class."""
from __future__ import annotations

import math

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from mmseg.registry import MODELS

from .calibration_set import CalibrationSet

#: a fitted temperature outside (0, MAX_TEMPERATURE] means the fit failed
MAX_TEMPERATURE = 100.0


def check_temperature(temperature: float, nll: float, split: str) -> None:
    """A temperature ≤ 0 reverses the ranking of the classes and one above
    :data:`MAX_TEMPERATURE` makes every pixel uniform: either says the
    logits carry no usable information about the labels of the split (the
    wrong split, labels of another data set, a broken model)."""
    if not (0.0 < temperature <= MAX_TEMPERATURE) or not math.isfinite(temperature):
        raise ValueError(
            f'temperature scaling diverged on split {split!r}: fitted temperature '
            f'{temperature:.4g} (NLL {nll:.4f} there) is outside (0, '
            f'{MAX_TEMPERATURE:g}]; the model\'s predictions do not match the '
            f'split\'s labels: check the split, its labels and the checkpoint')


@MODELS.register_module()
class TemperatureScaling(nn.Module):
    """p = softmax(z / T) with one T > 0 (Guo et al., "On Calibration of
    Modern Neural Networks", ICML 2017).

    The argmax, hence mIoU, is unchanged; only the confidence moves. T is
    fitted by the NLL over every valid pixel of a held-out split,
    NLL(β) = (1/N) Σ_i [logsumexp_c(β z_ic) − β z_iy], β = 1/T, which is
    convex in β with

        NLL'(β) = (1/N) Σ_i (E_p[z_i] − z_iy),   NLL''(β) = (1/N) Σ_i Var_p[z_i],

    p = softmax(β z_i), so Newton's method on β (float64 sums, one pass over
    the split per step, halving a step that raises the NLL) converges in a
    few passes to the exact optimum of all pixels, none sampled.

    Args:
        temperature: T (a fitted value, or 1 before fitting).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f'TemperatureScaling: temperature must be > 0, got '
                             f'{temperature}')
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))

    def forward(self, logits: Tensor, image: Tensor | None = None) -> Tensor:
        """Calibrated logits z / T of logits (B, C, H, W); ``image`` unused."""
        return logits / self.temperature.to(logits.dtype)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature.item():.4f}'

    @staticmethod
    def _nll_and_derivatives(data: CalibrationSet, beta: float,
                             device: torch.device) -> tuple[float, float, float]:
        """Mean NLL at β and its first two derivatives, over every valid pixel."""
        total = torch.zeros(3, dtype=torch.float64, device=device)
        for logits, label in data.valid_pixels():
            z = logits.to(device, torch.float64)
            y = label.to(device)[:, None]
            log_p = torch.log_softmax(beta * z, 1)
            p = log_p.exp()
            mean_z = (p * z).sum(1)
            total += torch.stack([-log_p.gather(1, y).sum(),
                                  (mean_z - z.gather(1, y)[:, 0]).sum(),
                                  (p * z * z).sum(1).sub_(mean_z ** 2).sum()])
        nll, grad, hess = (total / data.num_valid).tolist()
        return nll, grad, hess

    @torch.no_grad()
    def fit(self, data: CalibrationSet, max_steps: int = 100,
            tolerance: float = 1e-9) -> dict[str, float]:
        """Fit T on ``data``: damped Newton on β = 1/T, from the current T.

        β runs over all reals (the NLL is defined and convex there too), so a
        split whose optimum lies at β ≤ 0 or at T > 100 is found and
        refused rather than clipped.

        Returns ``dict(temperature, nll, steps)``.

        Raises:
            ValueError: the split has no valid pixel; the fit diverged (T ≤ 0
                or T > 100, naming the value and the NLL); or it did not
                converge in ``max_steps``.
        """
        data.check_valid()
        device = self.temperature.device
        beta = 1.0 / self.temperature.item()
        nll, grad, hess = self._nll_and_derivatives(data, beta, device)
        for steps in range(1, max_steps + 1):
            # Newton's step where the NLL curves, a unit gradient step where
            # it is flat; halved until the NLL does not rise
            step = grad / hess if hess > 1e-12 else grad
            while True:
                candidate = beta - step
                new = self._nll_and_derivatives(data, candidate, device)
                if new[0] <= nll or abs(step) <= tolerance * max(abs(beta), 1e-3):
                    break
                step /= 2
            beta, (nll, grad, hess) = candidate, new
            if abs(step) <= tolerance * max(abs(beta), 1e-3):
                break
        else:
            raise ValueError(
                f'temperature scaling on split {data.name!r} did not converge in '
                f'{max_steps} Newton steps (T = {1 / beta:.4g}, NLL {nll:.4f})')
        temperature = 1.0 / beta if beta != 0 else math.inf
        check_temperature(temperature, nll, data.name)
        self.temperature.fill_(temperature)
        print_log(f'temperature scaling on {data.name}: T = {temperature:.4f}, NLL '
                  f'{nll:.4f} ({steps} Newton steps)', logger='current')
        return dict(temperature=temperature, nll=nll, steps=steps)

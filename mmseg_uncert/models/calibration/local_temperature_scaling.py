"""Local temperature scaling: a temperature per pixel, predicted from the
logits and the image."""
from __future__ import annotations

import copy
import math

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from mmseg.registry import MODELS

from .calibration_set import CalibrationSet
from .temperature_scaling import TemperatureScaling, check_temperature


@MODELS.register_module()
class LocalTemperatureScaling(nn.Module):
    """p_ij = softmax(z_ij / T_ij), T = T_min + softplus(g([log_softmax(z), x]))
    (Ding et al., "Local Temperature Scaling for Probability Calibration",
    ICCV 2021).

    ``g`` is a small fully convolutional network over the log-probabilities
    (not the raw logits: a constant added to a pixel's logits leaves its
    probabilities, so it should leave its temperature) and the network's
    input image, with dilations 1, 2 and 4 so that each pixel's temperature
    sees about 15 pixels around it: the spatial context a single temperature
    lacks (boundaries, small objects, texture). T > T_min everywhere, so the
    argmax, hence mIoU, is unchanged.

    The last layer starts at zero with its bias set so that T = ``temperature``
    everywhere: fitting starts from global temperature scaling (fitted first
    on the same split) and only learns where it lowers the NLL. Fitted with
    Adam on the NLL over valid pixels, one image per step.

    Args:
        num_classes: C.
        hidden_channels: width of ``g``.
        temperature: the temperature everywhere before fitting.
        min_temperature: T_min > 0.
    """

    def __init__(self, num_classes: int, hidden_channels: int = 16,
                 temperature: float = 1.0, min_temperature: float = 0.05) -> None:
        super().__init__()
        if not 0 < min_temperature < temperature:
            raise ValueError(f'LocalTemperatureScaling: need 0 < min_temperature '
                             f'({min_temperature}) < temperature ({temperature})')
        self.num_classes = num_classes
        self.min_temperature = min_temperature
        h = hidden_channels
        self.net = nn.Sequential(
            nn.Conv2d(num_classes + 3, h, 3, padding=1), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(h, 1, 1))
        self.reset_temperature(temperature)

    @torch.no_grad()
    def reset_temperature(self, temperature: float) -> None:
        """T = ``temperature`` at every pixel (the last layer zeroed)."""
        if not temperature > self.min_temperature:
            raise ValueError(f'LocalTemperatureScaling: temperature {temperature:.4g} is not '
                             f'above min_temperature ({self.min_temperature}); lower '
                             f'min_temperature')
        last = self.net[-1]
        last.weight.zero_()
        # softplus⁻¹(t) = log(exp(t) − 1)
        last.bias.fill_(math.log(math.expm1(temperature - self.min_temperature)))

    def temperature_map(self, logits: Tensor, image: Tensor) -> Tensor:
        """T (B, 1, H, W) of logits (B, C, H, W) and image (B, 3, H, W)."""
        if image is None:
            raise ValueError('LocalTemperatureScaling needs the image beside the logits')
        if image.shape[-2:] != logits.shape[-2:]:
            raise ValueError(f'LocalTemperatureScaling: image of size '
                             f'{tuple(image.shape[-2:])}, logits of size '
                             f'{tuple(logits.shape[-2:])}')
        weight = self.net[0].weight
        features = torch.cat([torch.log_softmax(logits.to(weight.dtype), 1),
                              image.to(weight.dtype)], 1)
        return self.min_temperature + nn.functional.softplus(self.net(features))

    def forward(self, logits: Tensor, image: Tensor | None = None) -> Tensor:
        """z / T(z, x) of logits (B, C, H, W) and image (B, 3, H, W)."""
        return logits / self.temperature_map(logits, image).to(logits.dtype)

    def fit(self, data: CalibrationSet, epochs: int = 10, lr: float = 1e-3,
            seed: int = 0) -> dict[str, float]:
        """Fit on ``data``: global temperature scaling first (the start), then
        ``epochs`` passes of Adam, images in a seeded random order, keeping
        the epoch of lowest NLL over ``data``.

        Returns ``dict(global_temperature, nll, mean_temperature)``.

        Raises:
            ValueError: no valid pixel; the global fit diverged; or the
                fitted temperatures' mean is beyond the global limits.
        """
        data.check_valid()
        device = self.net[0].weight.device
        start = TemperatureScaling().to(device).fit(data)
        self.reset_temperature(start['temperature'])
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        order = torch.Generator().manual_seed(seed)
        # the parameters of the epoch with the lowest NLL over the split are
        # kept, the start (global temperature scaling) among them: the fit
        # never ends worse than one temperature
        best_nll, _ = self.evaluate(data)
        best_state = copy.deepcopy(self.state_dict())
        for epoch in range(epochs):
            for k in torch.randperm(len(data), generator=order).tolist():
                item = data.image(k)
                if not (item.label != data.ignore_index).any():
                    continue
                calibrated = self(item.logits[None].to(device), item.image[None].to(device))
                loss = nn.functional.cross_entropy(
                    calibrated, item.label[None].to(device),
                    ignore_index=data.ignore_index)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            nll, _ = self.evaluate(data)
            if nll < best_nll:
                best_nll, best_state = nll, copy.deepcopy(self.state_dict())
            print_log(f'local temperature scaling on {data.name}: epoch {epoch + 1}/'
                      f'{epochs}, NLL {nll:.4f} (best {best_nll:.4f})', logger='current')
        self.load_state_dict(best_state)
        nll, mean_t = self.evaluate(data)
        check_temperature(mean_t, nll, data.name)
        return dict(global_temperature=start['temperature'], nll=nll,
                    mean_temperature=mean_t)

    @torch.no_grad()
    def evaluate(self, data: CalibrationSet) -> tuple[float, float]:
        """Mean NLL and mean temperature over the valid pixels of ``data``."""
        device = self.net[0].weight.device
        nll = t_sum = 0.0
        for item in data:
            valid = item.label != data.ignore_index
            logits = item.logits[None].to(device)
            t = self.temperature_map(logits, item.image[None].to(device))[0, 0]
            log_p = torch.log_softmax(logits / t, 1)[0]
            nll -= log_p.gather(0, item.label.clamp(0, data.num_classes - 1)[None].to(
                device))[0][valid.to(device)].double().sum().item()
            t_sum += t[valid.to(device)].double().sum().item()
        return nll / data.num_valid, t_sum / data.num_valid

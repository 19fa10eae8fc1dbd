"""Monte Carlo dropout around any mmseg segmentor."""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor, nn

from mmseg.registry import MODELS

from .members import build_member
from .predictive_segmentor import PredictiveSegmentor, probability_bands


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The model's dropout layers with a non-zero rate (torch's Dropout,
    Dropout1d/2d/3d, AlphaDropout and mmcv's DropPath)."""
    from mmcv.cnn.bricks.drop import DropPath
    found = []
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            found.append(module)
        elif isinstance(module, DropPath) and module.drop_prob > 0:
            found.append(module)
    return found


@MODELS.register_module()
class MCDropoutSegmentor(PredictiveSegmentor):
    """T stochastic passes with dropout on and BatchNorm in eval (Gal &
    Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016; Kendall et
    al., "Bayesian SegNet", BMVC 2017).

    p̄ = (1/T) Σ_t softmax(f(x; dropout mask t)); the same outputs as
    :class:`EnsembleSegmentor` (``seg_logits`` = log p̄, ``pred_sem_seg``,
    ``pred_uncertainty`` with total / aleatoric / epistemic / std /
    variation_ratio). Only the dropout layers are put in training mode for
    the passes; BatchNorm keeps its running statistics, which are never
    updated. The masks are drawn from a generator seeded with ``seed`` for
    every batch, so a run is reproducible and the global RNG is untouched.

    Config::

        model = dict(type='MCDropoutSegmentor',
                     model=dict(config='configs/fcn/...py', checkpoint='...pth'),
                     num_samples=20, seed=0)

    Args:
        model: the segmentor, as an ensemble member is given: ``dict(config,
            checkpoint)`` or ``dict(model=DICT, checkpoint)``.
        num_samples: T, stochastic passes per batch.
        seed: seed of the dropout masks.
        test_cfg, data_preprocessor, untrained: see
            :class:`~.predictive_segmentor.PredictiveSegmentor`.
    """

    def __init__(self,
                 model: dict[str, Any] | str,
                 num_samples: int = 20,
                 seed: int = 0,
                 test_cfg: dict | None = None,
                 data_preprocessor: dict | None = None,
                 **untrained: Any) -> None:
        init_cfg = self.check_untrained_arguments('MCDropoutSegmentor', untrained)
        if num_samples < 1:
            raise ValueError(f'MCDropoutSegmentor: num_samples must be >= 1, '
                             f'got {num_samples}')
        segmentor, info = build_member(model, 'MC-dropout model', test_cfg)
        layers = dropout_layers(segmentor)
        if not layers:
            raise ValueError(
                f"MCDropoutSegmentor: {info['source']} has no dropout layer "
                f"with a non-zero rate, so every pass would be the same; add "
                f"one (e.g. decode_head.dropout_ratio=0.1) and train with it")
        self._init_around(segmentor, info, data_preprocessor, init_cfg)
        self.num_samples = num_samples
        self.seed = seed
        self._dropout = layers

    def member_bands(self, inputs: Tensor, batch_img_metas: list[dict]
                     ) -> Iterator[Iterator[tuple[int, Tensor]]]:
        self.model.eval()
        devices = [inputs.device.index or 0] if inputs.is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for layer in self._dropout:
                layer.train()
            try:
                for _ in range(self.num_samples):
                    yield probability_bands(self.model, inputs, batch_img_metas)
            finally:
                for layer in self._dropout:
                    layer.eval()

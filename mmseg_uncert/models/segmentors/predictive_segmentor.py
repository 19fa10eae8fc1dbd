"""Shared inference of segmentors that predict from M probability maps."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from mmseg.models.segmentors import BaseSegmentor
from mmseg.utils import OptSampleList, SampleList

from ..decode_heads.head_taps import MaskQueryTap
from ..uncertainty import UNCERTAINTY_NAMES, PredictiveStatistics
from .members import mmseg_scope
from .postprocess import samples_with_uncertainty
from .cascade import final_head
from .slide_inference import model_bands


class PredictiveSegmentor(BaseSegmentor):
    """Base of :class:`EnsembleSegmentor`, :class:`MCDropoutSegmentor` and
    :class:`TTASegmentor`.

    A subclass yields the M probability maps of a batch
    (:meth:`member_bands`); this class folds them into running sums
    (:class:`~mmseg_uncert.models.uncertainty.PredictiveStatistics`, never an
    [M, B, C, H, W] tensor) and gives each data sample

    * ``seg_logits``: log p̄ (softmax of it is p̄, as the metrics expect),
    * ``pred_sem_seg``: argmax p̄,
    * ``pred_uncertainty``: one (1, H, W) map per name in
      :data:`~mmseg_uncert.models.uncertainty.UNCERTAINTY_NAMES`,

    with padding removed, flips undone and resized to the original image by
    mmseg's own post-processing. Inference only: ``loss`` raises.

    Arguments every subclass takes besides its own:

    * ``test_cfg``: replaces the wrapped models' ``test_cfg`` when given;
    * ``data_preprocessor``: defaults to the (first) wrapped model's;
    * ``untrained``: ``train_cfg`` and ``pretrained``, None as
      ``mmseg.apis.init_model`` passes them (the models are trained already),
      and ``init_cfg``, unused (see :meth:`check_untrained_arguments`).
    """

    align_corners: bool = False
    #: the wrapped models hold trained weights: tools/test.py needs no
    #: checkpoint, and the runner's weight initialisation leaves them alone
    carries_weights: bool = True

    def init_weights(self) -> None:
        """The members hold trained weights: nothing to initialise."""

    def train(self, mode: bool = True) -> 'PredictiveSegmentor':
        """The wrapped models stay in eval (dropout off, BatchNorm statistics
        frozen) whatever the mode: they are never trained here, and MC dropout
        switches on only its dropout layers, for its passes."""
        super().train(mode)
        for child in self.children():
            child.eval()
        return self

    def _init_around(self, segmentor: nn.Module, info: dict,
                     data_preprocessor: dict | None, init_cfg: dict | None) -> None:
        """Initialise a predictive segmentor around one trained
        ``segmentor`` (MC dropout's passes, TTA's views), as
        :func:`~.members.build_member` gave it with its ``info``: the
        model's data preprocessor unless one is given, its classes and output
        channels."""
        preprocessor = data_preprocessor or info['data_preprocessor']
        with mmseg_scope():
            super().__init__(data_preprocessor=preprocessor, init_cfg=init_cfg)
        self.model = segmentor
        self.info = info
        self.data_preprocessor_cfg = preprocessor
        self.num_classes = info['num_classes']
        self.align_corners = segmentor.align_corners
        self.out_channels = segmentor.out_channels

    @staticmethod
    def check_untrained_arguments(owner: str, untrained: dict[str, Any]) -> dict | None:
        """``train_cfg``, ``pretrained`` and ``init_cfg`` are accepted as every
        mmseg segmentor accepts them (``mmseg.apis.init_model`` sets the first
        two to None), but the wrapped models are trained already: anything
        else is an error, not silently ignored. Returns ``init_cfg``."""
        unknown = sorted(set(untrained) - {'train_cfg', 'pretrained', 'init_cfg'})
        if unknown:
            raise TypeError(f'{owner}: unexpected model arguments {unknown}')
        for key in ('train_cfg', 'pretrained'):
            value = untrained.get(key)
            if value is not None and not (key == 'train_cfg' and value == {}):
                raise ValueError(
                    f'{owner}: model.{key}={value!r} has no meaning here, its '
                    f'models are trained already (their own configs and '
                    f'checkpoints carry that); remove model.{key}')
        return untrained.get('init_cfg')

    @abstractmethod
    def member_bands(self, inputs: Tensor,
                     batch_img_metas: list[dict]) -> Iterator[Iterator[tuple[int, Tensor]]]:
        """Yield each of the M members' softmax maps of a batch as row bands
        ``(top, (B, C, h, W))``, top to bottom (one band: the whole map; a
        member in slide mode hands its rows over as they are final, see
        :func:`~.slide_inference.slide_bands`); each member's bands are taken
        before the next member runs."""

    def member_probabilities(self, inputs: Tensor,
                             batch_img_metas: list[dict]) -> Iterator[Tensor]:
        """Yield the M softmax maps (B, C, H, W) of a batch, one at a time."""
        for bands in self.member_bands(inputs, batch_img_metas):
            parts = [prob for _, prob in bands]
            yield parts[0] if len(parts) == 1 else torch.cat(parts, 2)

    def predictive_statistics(self, inputs: Tensor,
                              batch_img_metas: list[dict]) -> PredictiveStatistics:
        """Σ p_m, Σ p_m², Σ H[p_m] and votes over the members of a batch,
        folded in band by band (see :meth:`member_bands`)."""
        stats = PredictiveStatistics()
        with torch.no_grad():
            for bands in self.member_bands(inputs, batch_img_metas):
                stats.add_bands(bands, inputs.shape[2])
        return stats

    @staticmethod
    def _metas(inputs: Tensor, data_samples: OptSampleList) -> list[dict]:
        return batch_metas(inputs, data_samples)

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """log p̄ (B, C, H, W) at the input's resolution."""
        return _log_prob(self.predictive_statistics(inputs, batch_img_metas).mean())

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None) -> Tensor:
        return self.encode_decode(inputs, self._metas(inputs, data_samples))

    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> SampleList:
        """Data samples with ``seg_logits``, ``pred_sem_seg`` and
        ``pred_uncertainty`` (see the class docstring)."""
        stats = self.predictive_statistics(inputs, self._metas(inputs, data_samples))
        maps = stats.decompose()
        return samples_with_uncertainty(
            self, _log_prob(stats.mean()),
            torch.stack([maps[name] for name in UNCERTAINTY_NAMES], 1),
            UNCERTAINTY_NAMES, data_samples)

    def extract_feat(self, inputs: Tensor) -> list[Tensor]:
        raise NotImplementedError(
            f'{type(self).__name__} has one feature pyramid per member; call '
            f'extract_feat on a member')

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        raise RuntimeError(
            f'{type(self).__name__} is for inference; train its model(s) on '
            f'their own (an ensemble with tools/train_ensemble.py)')


def class_probabilities(model: nn.Module, logits: Tensor) -> Tensor:
    """A member's class probabilities from what its ``inference`` gives:
    softmax of the logits; for MaskFormer-style heads, whose prediction is
    the semantic score s_c = Σ_q p_q(c)·m_q ≥ 0 rather than logits (see
    :mod:`~mmseg_uncert.models.decode_heads.head_taps`), s / Σ_c s."""
    if MaskQueryTap.fits(final_head(model)):
        scores = logits.clamp_min(0)
        return scores / scores.sum(1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    return logits.softmax(1)


def probability_bands(model: nn.Module, inputs: Tensor,
                      batch_img_metas: list[dict]) -> Iterator[tuple[int, Tensor]]:
    """:func:`class_probabilities` of ``model``'s logits as the row bands of
    :func:`~.slide_inference.model_bands`; a band's logits are freed once its
    probabilities exist, and the probabilities once the consumer asks for the
    next band (which runs windows)."""
    for top, logits in model_bands(model, inputs, batch_img_metas):
        prob = class_probabilities(model, logits)
        del logits
        yield top, prob
        del prob


def batch_metas(inputs: Tensor, data_samples: OptSampleList) -> list[dict]:
    """The samples' image metas, or, without samples (tensor mode), metas
    of unpadded images of the input's size."""
    if data_samples is not None:
        return [sample.metainfo for sample in data_samples]
    shape = tuple(inputs.shape[2:])
    return [dict(ori_shape=shape, img_shape=shape, pad_shape=shape,
                 padding_size=[0, 0, 0, 0])] * inputs.shape[0]


def _log_prob(prob: Tensor) -> Tensor:
    """log p with p = 0 mapped to the log of the smallest normal float, so
    that the logits stay finite (the metrics refuse Inf)."""
    return prob.clamp_min(torch.finfo(prob.dtype).tiny).log()

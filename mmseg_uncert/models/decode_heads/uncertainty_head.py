"""The contract of a decode head that predicts named uncertainty maps beside
its class logits."""
from __future__ import annotations

from typing import Any, Sequence

from mmengine.model import BaseModule
from torch import Tensor, nn


class UncertaintyHead(BaseModule):
    """Base of the uncertainty heads (:class:`~.dual_head.DualHead`,
    :class:`~.heteroscedastic_head.HeteroscedasticHead`,
    :class:`~.dirichlet_head.DirichletHead`).

    The contract every consumer relies on (the uncertainty segmentors'
    post-processing, test-time augmentation, ONNX export, deployment):

    * ``forward`` and ``predict`` return (B, C + K, h, w): the C class
      logits, then the K maps named by ``uncertainty_names``, in that order;
    * ``num_classes`` is C, ``out_channels`` is C + K;
    * ``head`` is the wrapped mmseg decode head, whose ``align_corners``,
      ``ignore_index`` and ``threshold`` the head shares.

    :meth:`split` is the one place where outputs are cut into logits and maps.
    """

    #: names of the K maps, in channel order (a class attribute where fixed)
    uncertainty_names: tuple[str, ...]
    num_classes: int
    head: nn.Module

    def _share_head_attributes(self) -> None:
        """Copy what segmentors read from a decode head off the wrapped one,
        once ``self.head`` and ``self.uncertainty_names`` are set."""
        self.num_classes = self.head.num_classes
        self.align_corners = self.head.align_corners
        self.ignore_index = self.head.ignore_index
        self.threshold = getattr(self.head, 'threshold', None)
        self.out_channels = self.num_classes + len(self.uncertainty_names)

    def predict_parts(self, inputs: Sequence[Tensor], *args: Any
                      ) -> tuple[Tensor, Tensor]:
        """``predict``'s class logits (B, C, H, W) and maps (B, K, H, W)
        apart; a head that builds them apart overrides it, so that a caller
        that wants them apart (the ONNX graph) gets no concatenation to cut."""
        return self.split(self.predict(inputs, *args))

    def split(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """The class logits (B, C, ...) and the maps (B, K, ...) of outputs
        (B, C + K, ...) laid out as this head's."""
        return split_outputs(outputs, self.uncertainty_names)


def uncertainty_names(head: nn.Module) -> tuple[str, ...]:
    """The maps a decode head adds to its logits: an :class:`UncertaintyHead`'s
    ``uncertainty_names``, none for any other head."""
    return tuple(head.uncertainty_names) if isinstance(head, UncertaintyHead) else ()


def split_outputs(outputs: Tensor, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """The class logits and the K = len(names) maps of (B, C + K, ...)
    outputs; no maps, (B, 0, ...), where ``names`` is empty."""
    num_classes = outputs.shape[1] - len(names)
    if num_classes < 1:
        raise ValueError(f'{outputs.shape[1]} output channels cannot hold class logits '
                         f'and the {len(names)} maps {list(names)}')
    return outputs[:, :num_classes], outputs[:, num_classes:]

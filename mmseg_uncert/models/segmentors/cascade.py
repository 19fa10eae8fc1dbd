"""One decode head or a cascade of them (OCRNet), as mmseg builds and runs
cascades."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from mmseg.models.segmentors import CascadeEncoderDecoder
from mmseg.utils import ConfigType, SampleList, add_prefix


def final_head(segmentor: nn.Module) -> nn.Module:
    """The decode head that gives a segmentor's prediction: the last stage
    of a cascade (``CascadeEncoderDecoder``), else its only one."""
    head = segmentor.decode_head
    return head[-1] if isinstance(head, nn.ModuleList) else head


class OptionalCascade:
    """Mixin for an mmseg ``EncoderDecoder`` (put it before it among the
    bases) whose ``decode_head`` is one head config or a list of them: a
    list is a cascade, built and run for inference by mmseg's own
    :class:`~mmseg.models.segmentors.CascadeEncoderDecoder` code; the last
    stage gives the prediction. Training code that runs the stages itself
    (a distiller reads the last stage's outputs) uses
    :meth:`earlier_stages` and :meth:`decode_prefix`."""

    num_stages: int

    def _init_decode_head(self, decode_head: ConfigType | list) -> None:
        if not isinstance(decode_head, (list, tuple)):
            super()._init_decode_head(decode_head)
            self.num_stages = 1
            return
        self.num_stages = len(decode_head)
        CascadeEncoderDecoder._init_decode_head(self, list(decode_head))

    @property
    def final_decode_head(self) -> nn.Module:
        """The head that gives the prediction (a cascade's last stage)."""
        return final_head(self)

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        if self.num_stages == 1:
            return super().encode_decode(inputs, batch_img_metas)
        return CascadeEncoderDecoder.encode_decode(self, inputs, batch_img_metas)

    def earlier_stages(self, x: Sequence[Tensor], data_samples: SampleList | None = None
                       ) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
        """A cascade's stages before the last: the previous output the last
        stage reads (none for one head), and, given labels, their losses
        under mmseg's keys (``decode_<i>.``)."""
        prev: tuple[Tensor, ...] = ()
        losses: dict[str, Tensor] = {}
        stages = list(self.decode_head[:-1]) if self.num_stages > 1 else []
        for i, stage in enumerate(stages):
            if data_samples is not None:
                losses.update(add_prefix(stage.loss(x, *prev, data_samples, self.train_cfg),
                                         f'decode_{i}'))
            prev = (stage.forward(x, *prev), )
        return prev, losses

    def decode_prefix(self) -> str:
        """The final head's loss prefix, as mmseg's segmentors name it."""
        return 'decode' if self.num_stages == 1 else f'decode_{self.num_stages - 1}'

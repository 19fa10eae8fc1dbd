"""Deep ensemble of mmseg segmentors, with a per-pixel uncertainty split."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from mmengine.config import ConfigDict
from torch import Tensor, nn

from mmseg.registry import MODELS

from .members import build_member, load_config, mmseg_scope
from .predictive_segmentor import PredictiveSegmentor, probability_bands

_NORMALISATION_KEYS = ('mean', 'std', 'bgr_to_rgb', 'rgb_to_bgr')


@MODELS.register_module()
class EnsembleSegmentor(PredictiveSegmentor):
    """Average of M segmentors' softmax outputs (Lakshminarayanan et al.,
    "Simple and Scalable Predictive Uncertainty Estimation using Deep
    Ensembles", NeurIPS 2017).

    p̄ = (1/M) Σ_m softmax(f_m(x)), accumulated member by member: memory is
    one member's output plus running sums. Each data sample gets
    ``seg_logits`` = log p̄, ``pred_sem_seg`` = argmax p̄ and
    ``pred_uncertainty`` with ``total`` (H[p̄]), ``aleatoric``
    (mean H[p_m]), ``epistemic`` (their difference, the mutual information),
    ``std`` (of p_m at the predicted class) and ``variation_ratio`` (see
    :mod:`mmseg_uncert.models.uncertainty`).

    Config::

        model = dict(
            type='EnsembleSegmentor',
            members=[
                dict(config='mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',
                     checkpoint='checkpoints/deeplabv3plus_r50.pth'),
                dict(config='work_dirs/ens/member_1/cfg.py',
                     checkpoint='work_dirs/ens/member_1/iter_2000.pth'),
                dict(model=dict(type='EncoderDecoder', ...), checkpoint=...),
            ],
            test_cfg=dict(mode='slide', crop_size=(512, 1024), stride=(341, 683)))

    With ``stream_members=True`` no member stays in memory: each is built and
    loaded from its checkpoint for its pass and freed after it, so memory
    holds one member's weights at a time, whatever M. The price is building
    and loading every member for every batch: for DeepLabV3+ R-50/R-101
    members on 1024x2048 images, 2 CPU cores, 1.04-1.08x the resident time at
    M = 5, and 2.74 instead of 3.46 GiB (``benchmarks/scale.py``). It is for
    when memory, not time, is the limit, such as a large ensemble on a small
    GPU or a laptop. The outputs are the same.

    Args:
        members: one spec per member (see :func:`~.members.build_member`).
        test_cfg: when given, replaces every member's ``test_cfg``
            (``mode='whole'`` or ``'slide'``); otherwise each keeps its own.
        data_preprocessor: normalisation applied once for all members;
            defaults to the first member's, and every member must normalise
            the same way.
        stream_members: build and load each member for its pass instead of
            keeping all M in memory (see above); every member needs a
            checkpoint.
        untrained: ``train_cfg`` and ``pretrained`` (None, as
            ``mmseg.apis.init_model`` passes them; the models are trained
            already) and ``init_cfg`` (unused: the models carry their weights).
    """

    def __init__(self,
                 members: Sequence[dict[str, Any] | str],
                 test_cfg: dict | None = None,
                 data_preprocessor: dict | None = None,
                 stream_members: bool = False,
                 **untrained: Any) -> None:
        init_cfg = self.check_untrained_arguments('EnsembleSegmentor', untrained)
        if not members:
            raise ValueError('EnsembleSegmentor: members is empty')
        models, infos = [], []
        for index, spec in enumerate(members):
            # built and loaded once even when streamed: a bad config or
            # checkpoint fails here, not at the first image
            model, info = build_member(spec, f'ensemble member {index}', test_cfg)
            models.append(model)
            infos.append(info)
        _check_compatible(infos, 'ensemble member')
        if stream_members:
            unloaded = [i for i, info in enumerate(infos) if info['checkpoint'] is None]
            if unloaded:
                raise ValueError(
                    f'EnsembleSegmentor: stream_members=True rebuilds every member '
                    f'from its checkpoint for each pass, and ensemble member(s) '
                    f'{unloaded} have none; give each a checkpoint or set '
                    f'stream_members=False')
        if data_preprocessor is None:
            data_preprocessor = infos[0]['data_preprocessor']
        with mmseg_scope():
            super().__init__(data_preprocessor=data_preprocessor,
                             init_cfg=init_cfg)
        self.data_preprocessor_cfg = data_preprocessor
        self.member_info = infos
        self.num_classes = infos[0]['num_classes']
        self.align_corners = models[0].align_corners
        self.out_channels = models[0].out_channels
        self.stream_members = stream_members
        # streamed members are not child modules: nothing of theirs is kept,
        # moved to a device or saved with the ensemble; their config files
        # are read here once, not at every pass
        self.members = None if stream_members else nn.ModuleList(models)
        self.member_specs = ([_inline(spec, test_cfg) for spec in members]
                             if stream_members else None)

    def member_bands(self, inputs: Tensor, batch_img_metas: list[dict]
                     ) -> Iterator[Iterator[tuple[int, Tensor]]]:
        for index in range(len(self.member_info)):
            yield self._member_bands(index, inputs, batch_img_metas)

    def _member_bands(self, index: int, inputs: Tensor,
                      batch_img_metas: list[dict]) -> Iterator[tuple[int, Tensor]]:
        # nothing of a pass outlives its bands: a streamed member is freed
        # once its last band is taken, before the next one is built
        member = self._member(index, inputs.device)
        yield from probability_bands(member, inputs, batch_img_metas)

    def _member(self, index: int, device: torch.device) -> nn.Module:
        """Member ``index``: the resident one, or (streamed) built and loaded
        from its checkpoint on ``device``."""
        if self.members is not None:
            return self.members[index]
        # building draws random initial weights, which the checkpoint then
        # replaces: the process's random stream is left as it was
        with torch.random.fork_rng(devices=[]):
            model, _ = build_member(self.member_specs[index], f'ensemble member {index}')
        return model.to(device)


def _inline(spec: dict[str, Any], test_cfg: dict | None) -> dict[str, Any]:
    """A member spec with its config file read into an inline model dict
    (``dict(model=..., checkpoint=...)``), so that building it again reads
    no file; ``test_cfg``, when given, replaces the member's (as
    :func:`~.members.build_member` does)."""
    inline = {key: value for key, value in spec.items() if key != 'config'}
    if 'config' in spec:
        inline['model'] = load_config(spec['config']).model.to_dict()
    if test_cfg is not None:
        inline['test_cfg'] = test_cfg
    return inline


def _check_compatible(infos: list[dict], role: str) -> None:
    """Members must agree on classes and on input normalisation."""
    first = infos[0]
    for index, info in enumerate(infos[1:], start=1):
        if info['num_classes'] != first['num_classes']:
            raise ValueError(
                f"{role}s disagree on num_classes: {role} 0 ({first['source']}) "
                f"has {first['num_classes']}, {role} {index} ({info['source']}) "
                f"has {info['num_classes']}")
        if first['classes'] and info['classes'] and info['classes'] != first['classes']:
            raise ValueError(
                f"{role}s disagree on class names: {role} 0 ({first['source']}) "
                f"has {list(first['classes'])}, {role} {index} "
                f"({info['source']}) has {list(info['classes'])}")
        a = normalisation_of(first['data_preprocessor'])
        b = normalisation_of(info['data_preprocessor'])
        if a != b:
            raise ValueError(
                f"{role}s normalise inputs differently: {role} 0 "
                f"({first['source']}) {a}, {role} {index} ({info['source']}) "
                f"{b}; one data_preprocessor serves every member")


def normalisation_of(cfg: dict | ConfigDict | None) -> dict:
    """The normalisation keys of a data preprocessor config."""
    cfg = cfg or {}
    return {key: (list(cfg[key]) if isinstance(cfg[key], (list, tuple)) else cfg[key])
            for key in _NORMALISATION_KEYS if key in cfg}

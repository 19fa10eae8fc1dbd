"""Distil frozen uncertainty teachers into one student with a DualHead."""
from __future__ import annotations

import contextlib
import os.path as osp
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmseg.models.decode_heads.decode_head import BaseDecodeHead

from mmengine.structures import PixelData

from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import ConfigType, OptConfigType, SampleList, add_prefix

from ..data_preprocessors import image_mask, source_target_preprocessor

from ..decode_heads.dirichlet_head import DirichletHead
from ..decode_heads.dual_head import DualHead
from ..decode_heads.head_taps import HeadTap, MaskQueryTap, tap_head
from ..frozen import FrozenChildren
from ..losses.pairwise_kd_loss import affinity
from ..precision import at_least_float32
from ..uncertainty import UNCERTAINTY_NAMES, PredictiveStatistics
from .ensemble_segmentor import normalisation_of
from .members import mmseg_scope
from .predictive_segmentor import PredictiveSegmentor
from .uncertainty_encoder_decoder import UncertaintyEncoderDecoder, final_head

#: the distillation losses' attributes (a mimic adapter has weights)
DISTILLATION_LOSSES = ('kd_loss', 'pairwise_loss', 'mimic_loss')
#: teacher maps ``class_std/<c>``: the members' spread of class c's probability
CLASS_STD = 'class_std'


def build_teacher(teacher: Any) -> PredictiveSegmentor:
    """An EnsembleSegmentor, MCDropoutSegmentor or TTASegmentor config, a
    list of member specs (an ensemble), or one member spec (an ensemble of
    one)."""
    if isinstance(teacher, (list, tuple)):
        teacher = dict(type='EnsembleSegmentor', members=list(teacher))
    elif isinstance(teacher, str) or 'type' not in teacher:
        teacher = dict(type='EnsembleSegmentor', members=[teacher])
    with mmseg_scope():
        model = MODELS.build(teacher)
    if not isinstance(model, PredictiveSegmentor):
        raise TypeError(f'EnsembleDistiller: the teacher must be an '
                        f'EnsembleSegmentor, MCDropoutSegmentor or TTASegmentor '
                        f'(or member specs), got {type(model).__name__}; for '
                        f'test-time augmentation of a training batch use '
                        f'TTASegmentor (UncertaintyTTAModel is the wrapper of '
                        f'tools/test.py --tta, on pipeline views)')
    return model


@MODELS.register_module()
class EnsembleDistiller(FrozenChildren, UncertaintyEncoderDecoder):
    """A student EncoderDecoder with a :class:`DualHead`, trained from frozen
    teachers that know their uncertainty.

    Per batch the teacher (an ensemble or MC-dropout model) runs first, one
    member at a time under ``no_grad`` (autocast with ``teacher_autocast``):
    no student graph is alive meanwhile. Its mean probabilities, uncertainty
    maps and feature affinities (when asked) accumulate streaming. The student's loss is

        CE(labels) [the head's own loss_decode]
        + pixel KD  T²·KL(q̄_T ‖ softmax(z_s/T))          (``kd_loss``)
        + uncertainty regression of the named maps         (DualHead's loss)
        or EnD²'s Dirichlet NLL of the members             (DirichletHead's loss)
        + pair-wise KD of feature affinities (optional)    (``pairwise_loss``)
        + feature mimic through a 1x1 adapter (optional)   (``mimic_loss``),

    CE and KD at the label's size (the student's logits upsampled), the
    uncertainty regression at the branch's own output resolution (the
    teacher's maps averaged over each output cell). CE is over labelled
    pixels; KD and the uncertainty regression over every pixel of the image,
    ignored or unlabelled ones included (batch padding excluded): the
    teacher's outputs are defined there, and where it is unsure (unknown
    things, ignored regions) is what the student must learn. Batches without labels train KD and the
    uncertainty term alone. A NaN or infinite teacher output stops training
    with an error naming the image.
    Distillation keys are prefixed ``distill.``.

    The teacher is a frozen child (``teacher``; see
    :mod:`~mmseg_uncert.models.frozen`): it moves with the model
    (``.cuda()``, ``.half()``, ...), has no trainable parameter, is not in
    the optimizer (with ``TrainableOptimWrapperConstructor``), DDP or the
    checkpoints, and stays in eval through ``train()`` (dropout off, BN
    statistics fixed). Checkpoints therefore hold the student only, under
    the keys of a plain :class:`UncertaintyEncoderDecoder` with the same
    DualHead: deploy with that config and the checkpoint. Inference
    (``predict``) runs the student alone.

    With a :class:`DirichletHead` the student's logits are a Dirichlet's
    log-concentrations, fitted to the members' predictions by EnD² (at the
    label's size, over the same pixels as KD) and its maps follow from them
    in closed form. A plain decode head is distilled without an uncertainty
    term; its checkpoints load into a plain EncoderDecoder. Batches of a
    :class:`~mmseg_uncert.datasets.SourceTargetDataset` train domain
    adaptation's distillation stage (see :meth:`loss`).

    Args:
        teacher: see :func:`build_teacher`.
        num_stages: a cascade's number of decode heads (as mmseg's
            CascadeEncoderDecoder takes it; checked against the list).
        backbone, decode_head (a DualHead, or a list whose last one is),
            neck, auxiliary_head,
            test_cfg, data_preprocessor, pretrained, init_cfg: the student,
            as for mmseg's EncoderDecoder.
        train_cfg: the student's, as for EncoderDecoder. ``None`` builds the
            model for inference, as ``mmseg.apis.init_model`` does (it sets
            ``model.train_cfg = None``): the teacher is not built, so its
            checkpoints need not exist, the model predicts as its student
            and ``loss`` raises. A training config leaves it out (``{}``).
        kd_loss: the pixel-wise KD loss config, or None.
        pairwise_loss: the pair-wise KD loss config, or None.
        mimic_loss: the feature mimic config (``student_channels`` and
            ``teacher_channels`` are filled in), or None.
        uncertainty_targets: the teacher map each uncertainty channel learns,
            ``{channel name: teacher map name}``; by default the same name.
            Besides the maps of ``UNCERTAINTY_NAMES``, ``class_std/<c>`` is
            the members' spread of class c's probability (the per-class
            targets of the forum thread's student, kept as a baseline).
        teacher_autocast: run the teacher under autocast (the device's
            default half type: float16 on CUDA, bfloat16 on CPU), even when
            the student trains in full precision.
        pseudo_label_threshold: on unlabelled target batches, pixels where
            the teacher's top probability is below it are ignored by the CE
            and KD terms (0 keeps all).
        student_init: a checkpoint of a plain segmentor of the student's
            architecture (e.g. one ensemble member) to start the student
            from, in ``init_weights``: its backbone, neck and decode head
            (the head a DualHead wraps) by their keys; the uncertainty
            branch starts from scratch.
    """

    requires_uncertainty_head = False

    def __init__(self,
                 teacher: Any,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 kd_loss: OptConfigType = dict(type='PixelKDLoss', temperature=1.0),
                 pairwise_loss: OptConfigType = None,
                 mimic_loss: OptConfigType = None,
                 uncertainty_targets: dict[str, str] | None = None,
                 teacher_autocast: bool = False,
                 pseudo_label_threshold: float = 0.0,
                 student_init: str | None = None,
                 num_stages: int | None = None,
                 neck: OptConfigType = None,
                 auxiliary_head: OptConfigType = None,
                 train_cfg: OptConfigType = {},
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 pretrained: str | None = None,
                 init_cfg: OptConfigType = None) -> None:
        # a copy: the default is shared between instances
        train_cfg = None if train_cfg is None else dict(train_cfg)
        with mmseg_scope():
            super().__init__(backbone=backbone, decode_head=decode_head, neck=neck,
                             auxiliary_head=auxiliary_head, train_cfg=train_cfg,
                             test_cfg=test_cfg,
                             data_preprocessor=source_target_preprocessor(data_preprocessor),
                             pretrained=pretrained, init_cfg=init_cfg)
        if self.num_stages > 1 and isinstance(self.final_decode_head, DirichletHead):
            raise TypeError('EnsembleDistiller: a DirichletHead cannot end a cascade (it '
                            'does not pass the previous stage\'s output on); use a '
                            'DualHead as the last stage')
        if num_stages is not None and num_stages != self.num_stages:
            raise ValueError(f'EnsembleDistiller: num_stages={num_stages} but decode_head '
                             f'lists {self.num_stages} heads')
        self.with_uncertainty = isinstance(self.final_decode_head, DualHead)
        self.with_dirichlet = isinstance(self.final_decode_head, DirichletHead)
        if not self.with_uncertainty:
            # a plain head: the features its prediction is made from are the
            # student's (read by pair-wise KD and feature mimic)
            self.student_tap: HeadTap = tap_head(self._segmentation_head(),
                                                 'EnsembleDistiller')
        self.teacher_autocast = teacher_autocast
        if not 0.0 <= pseudo_label_threshold < 1.0:
            raise ValueError(f'EnsembleDistiller: pseudo_label_threshold must lie in '
                             f'[0, 1), got {pseudo_label_threshold}')
        self.pseudo_label_threshold = pseudo_label_threshold
        self.student_init = student_init
        self.for_inference = train_cfg is None
        if self.for_inference:
            self._init_for_inference()
            return
        try:
            model = build_teacher(teacher)
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f'EnsembleDistiller teacher: {error}. To run the trained student '
                f'alone, without its teacher, build the model with '
                f'model.train_cfg=None (mmseg.apis.init_model does) or use '
                f'mmseg_uncert.apis.init_uncertainty_model / '
                f'UncertaintyInferencer') from error
        if model.num_classes != self.num_classes:
            raise ValueError(
                f'EnsembleDistiller: the teacher predicts {model.num_classes} '
                f'classes ({_sources(model)}), the student '
                f'{self.num_classes}; they must agree')
        ours = normalisation_of(data_preprocessor)
        theirs = normalisation_of(model.data_preprocessor_cfg)
        if ours and theirs and ours != theirs:
            raise ValueError(
                f'EnsembleDistiller: the student normalises inputs with {ours}, '
                f'the teacher with {theirs}; both read the same tensor')
        self.add_frozen('teacher', model)
        targets = dict(uncertainty_targets or {})
        # a DirichletHead's maps follow from its logits: no target to regress
        self.uncertainty_targets = {
            name: targets.get(name, name)
            for name in (self.final_decode_head.uncertainty_names if self.with_uncertainty
                         else ())}
        per_class = [f'{CLASS_STD}/{c}' for c in range(self.num_classes)]
        unknown = sorted(set(self.uncertainty_targets.values())
                         - set(UNCERTAINTY_NAMES) - set(per_class))
        if unknown:
            raise ValueError(f'EnsembleDistiller: no teacher map named {unknown}; '
                             f'the teacher gives {list(UNCERTAINTY_NAMES)} and the '
                             f'per-class spread {CLASS_STD}/0 .. {CLASS_STD}/'
                             f'{self.num_classes - 1} (set uncertainty_targets to map '
                             f'channels to them)')
        with mmseg_scope():
            self.kd_loss = MODELS.build(kd_loss) if kd_loss else None
            self.pairwise_loss = MODELS.build(pairwise_loss) if pairwise_loss else None
            self.mimic_loss = None
            self._teacher_taps: list[HeadTap] = []
            if pairwise_loss or mimic_loss:
                # any architecture: pair-wise KD compares affinities on the
                # student's grid, and mimic adapts channels and resolution
                self._teacher_taps = [
                    tap_head(final_head(member), 'EnsembleDistiller teacher')
                    for member in _teacher_models(model)]
                if any((m.test_cfg or {}).get('mode', 'whole') != 'whole'
                       for m in _teacher_models(model)):
                    raise ValueError('EnsembleDistiller: pair-wise KD and feature '
                                     'mimic need the teacher in whole-image '
                                     "inference (test_cfg mode='whole')")
            if mimic_loss:
                channels = {t.feature_channels for t in self._teacher_taps}
                if len(channels) != 1:
                    raise ValueError(f'EnsembleDistiller: feature mimic needs '
                                     f'teacher members with equal feature '
                                     f'channels, got {sorted(channels)}')
                self.mimic_loss = MODELS.build(dict(
                    mimic_loss, student_channels=self._student_feature_channels(),
                    teacher_channels=channels.pop()))

    def _init_for_inference(self) -> None:
        """The student alone (``train_cfg=None``): no teacher and no
        distillation loss; a checkpoint's loss weights (a mimic adapter) are
        left out on load instead of reported as unexpected keys."""
        self.register_module('teacher', None)
        self.kd_loss = self.pairwise_loss = self.mimic_loss = None
        self._teacher_taps = []
        self.uncertainty_targets = {}

        def drop_loss_weights(module: nn.Module, state_dict: dict, prefix: str,
                              *args: Any) -> None:
            for key in [k for k in state_dict if k.startswith(tuple(
                    f'{prefix}{loss}.' for loss in DISTILLATION_LOSSES))]:
                del state_dict[key]

        self.register_load_state_dict_pre_hook(drop_loss_weights)

    def _init_decode_head(self, decode_head: ConfigType | list) -> None:
        """One head, or a list of heads: a cascade (OCRNet), built as mmseg's
        CascadeEncoderDecoder builds it; the last stage gives the prediction."""
        if not isinstance(decode_head, (list, tuple)):
            super()._init_decode_head(decode_head)
            self.num_stages = 1
            return
        self.num_stages = len(decode_head)
        self.decode_head = nn.ModuleList(MODELS.build(h) for h in decode_head)
        self.align_corners = self.decode_head[-1].align_corners
        self.num_classes = self.decode_head[-1].num_classes
        self.out_channels = self.decode_head[-1].out_channels

    @property
    def final_decode_head(self) -> nn.Module:
        """The head that gives the prediction (a cascade's last stage)."""
        return final_head(self)

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        if self.num_stages == 1:
            return super().encode_decode(inputs, batch_img_metas)
        x = self.extract_feat(inputs)
        prev, _ = self._earlier_stages(x)
        return self.decode_head[-1].predict(x, *prev, batch_img_metas, self.test_cfg)

    def _earlier_stages(self, x: Sequence[Tensor], data_samples: SampleList | None = None
                        ) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
        """A cascade's stages before the last: the previous output the last
        stage reads, and (given labels) their losses, as mmseg computes them."""
        prev: tuple[Tensor, ...] = ()
        losses: dict[str, Tensor] = {}
        for i, stage in enumerate(self._stages()):
            if data_samples is not None:
                losses.update(add_prefix(stage.loss(x, *prev, data_samples, self.train_cfg),
                                         f'decode_{i}'))
            prev = (stage.forward(x, *prev), )
        return prev, losses

    def _stages(self) -> list[nn.Module]:
        """A cascade's heads before the last (none for one head)."""
        return list(self.decode_head[:-1]) if self.num_stages > 1 else []

    def _decode_prefix(self) -> str:
        """The final head's loss prefix, as mmseg's segmentors name it."""
        return 'decode' if self.num_stages == 1 else f'decode_{self.num_stages - 1}'

    def init_weights(self) -> None:
        """mmengine's initialisation, then :attr:`student_init`'s weights."""
        super().init_weights()
        if self.student_init:
            self.load_student_init(self.student_init)

    def load_student_init(self, path: str) -> None:
        """Copy a plain segmentor's checkpoint into the student (see
        :meth:`load_student_state`)."""
        from mmengine.runner import CheckpointLoader
        if not osp.isfile(path):
            raise FileNotFoundError(f'EnsembleDistiller: student_init checkpoint {path} '
                                    f'does not exist')
        checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        self.load_student_state(checkpoint.get('state_dict', checkpoint),
                                f'student_init {path}')

    def load_student_state(self, source: dict[str, Tensor], origin: str) -> None:
        """Copy a plain segmentor's weights into the student: ``decode_head.X``
        becomes ``decode_head.head.X`` under a DualHead or DirichletHead (in
        a cascade, the last stage's ``decode_head.<n>.X``). Every student
        weight but the uncertainty branch's and the distillation losses'
        (mimic's adapter) must be found, with its shape; ``origin`` names
        the source in the error."""
        own = self.state_dict()
        final = ('decode_head.' if self.num_stages == 1
                 else f'decode_head.{self.num_stages - 1}.')
        fresh = tuple(final + part for part in ('uncertainty_branch.', 'loss_uncertainty.',
                                                'loss_distribution.')) + (
            'kd_loss.', 'pairwise_loss.', 'mimic_loss.')
        wrapped = self._segmentation_head() is not self.final_decode_head
        loaded, missing = {}, []
        for key, value in own.items():
            if key.startswith(fresh):
                continue
            theirs = (key.replace(final + 'head.', final, 1)
                      if wrapped and key.startswith(final + 'head.') else key)
            if theirs not in source or source[theirs].shape != value.shape:
                missing.append(theirs)
            else:
                loaded[key] = source[theirs]
        if missing:
            raise KeyError(f'EnsembleDistiller: {origin} is not a checkpoint '
                           f'of the student\'s architecture: {len(missing)} weights absent '
                           f'or of another shape, e.g. {missing[:3]}')
        self.load_state_dict(loaded, strict=False)

    def _teacher_outputs(self, inputs: Tensor, metas: list[dict]) -> dict[str, Any]:
        """Mean probabilities (at the KD temperature), uncertainty maps, and
        mean affinity (on the first member's grid) / features of the members."""
        teacher = self.teacher
        temperature = self.kd_loss.temperature if self.kd_loss else 1.0
        stats = PredictiveStatistics()
        tempered = affinity_sum = feature_sum = log_prob_sum = grid = None
        count = 0
        # with teacher_autocast the teacher runs in half precision even when
        # the student does not; without it, it inherits the caller's autocast
        half = (torch.autocast(inputs.device.type) if self.teacher_autocast
                else contextlib.nullcontext())
        for tap in self._teacher_taps:  # a call of the teacher outside a step leaves its features
            tap.clear()
        with torch.no_grad(), half:
            for prob in teacher.member_probabilities(inputs, metas):
                prob = at_least_float32(prob)
                stats.add(prob)
                count += 1
                if temperature != 1.0:
                    q = (prob.clamp_min(1e-38).log() / temperature).softmax(1)
                    tempered = q if tempered is None else tempered.add_(q)
                if self.with_dirichlet:
                    # EnD² needs the members only through their mean log-probability
                    log_prob = self.final_decode_head.loss_distribution.log_prob(prob)
                    log_prob_sum = (log_prob if log_prob_sum is None
                                    else log_prob_sum.add_(log_prob))
                if self._teacher_taps:
                    # the member that just ran left its features (an MC
                    # dropout teacher: its one model, every pass)
                    taps = self._teacher_taps
                    feature, _ = taps[(count - 1) % len(taps)].take(
                        image_size=inputs.shape[2:])
                    feature = at_least_float32(feature)
                    if self.pairwise_loss is not None:
                        grid = grid or self.pairwise_loss.grid(feature)
                        a = affinity(feature, grid)
                        affinity_sum = a if affinity_sum is None else affinity_sum.add_(a)
                    if self.mimic_loss is not None:
                        if feature_sum is not None and feature.shape != feature_sum.shape:
                            # members of other architectures: the first's grid
                            feature = resize(feature, feature_sum.shape[2:],
                                             mode='bilinear', align_corners=False)
                        feature_sum = (feature.clone() if feature_sum is None
                                       else feature_sum.add_(feature))
        maps = stats.decompose()
        if any(t.startswith(CLASS_STD) for t in self.uncertainty_targets.values()):
            for c, spread in enumerate(stats.class_std().unbind(1)):
                maps[f'{CLASS_STD}/{c}'] = spread
        prob = stats.mean() if tempered is None else tempered / count
        _check_finite(dict(prob=prob, **{
            t: maps[t] for t in set(self.uncertainty_targets.values())}), metas)
        return dict(
            prob=prob, maps=maps, grid=grid,
            mean_log_prob=None if log_prob_sum is None else log_prob_sum / count,
            affinity=None if affinity_sum is None else affinity_sum / count,
            feature=None if feature_sum is None else feature_sum / count)

    def _segmentation_head(self) -> nn.Module:
        """The mmseg decode head that gives the student's logits (the one a
        DualHead or DirichletHead wraps)."""
        head = self.final_decode_head
        return head.head if self.with_uncertainty or self.with_dirichlet else head

    def _student_feature_channels(self) -> int:
        return (self.final_decode_head.feature_channels if self.with_uncertainty
                else self.student_tap.feature_channels)

    def _student_forward(self, x: Sequence[Tensor], data_samples: SampleList,
                         with_loss: bool
                         ) -> tuple[dict[str, Tensor], Tensor, Tensor | None, Tensor, Any]:
        """The student's segmentation losses (``with_loss``: the heads' own
        ``loss``, a cascade's earlier stages and auxiliary outputs included;
        else none), class scores (B, C, h, w), raw uncertainty outputs (None
        but for a DualHead), the features its prediction is made from, and,
        without a loss, the final head's whole forward output (for
        :meth:`_pseudo_label_loss`; else None)."""
        prev, losses = self._earlier_stages(x, data_samples if with_loss else None)
        head = self.final_decode_head
        metas = [s.metainfo for s in data_samples]
        raw = None
        if self.with_uncertainty:
            if with_loss:
                own, logits, raw, feature = head.loss_and_outputs(
                    x, *prev, data_samples, self.train_cfg)
                losses.update(add_prefix(own, self._decode_prefix()))
                return losses, logits, raw, feature, None
            output, logits, raw, feature = head.forward_all(x, *prev, batch_img_metas=metas)
            return losses, logits, raw, feature, output
        self.student_tap.clear()
        if self.with_dirichlet:
            logits = head.forward_logits(x)
            if with_loss:
                losses.update(add_prefix(head.head.loss_by_feat(logits, data_samples),
                                         self._decode_prefix()))
            feature, _ = self.student_tap.take(x)
            return losses, logits, raw, feature, None if with_loss else logits
        output = None
        if with_loss:
            losses.update(add_prefix(head.loss(x, *prev, data_samples, self.train_cfg),
                                     self._decode_prefix()))
        elif isinstance(self.student_tap, MaskQueryTap):
            output = head(x, [SegDataSample(
                metainfo=dict(m, batch_input_shape=m['img_shape'])) for m in metas])
        else:
            output = head(x, *prev)
        feature, logits = self.student_tap.take(x)
        return losses, logits, raw, feature, output

    def _pseudo_label_loss(self, output: Any, data_samples: SampleList
                           ) -> dict[str, Tensor]:
        """The final head's own ``loss_by_feat`` on its whole forward output
        (auxiliary outputs included), for the teacher's labels on a target
        batch."""
        head = self._segmentation_head()
        if not isinstance(head, BaseDecodeHead):
            raise TypeError(f'EnsembleDistiller: pseudo-labelled target batches need '
                            f'a BaseDecodeHead student (its loss_by_feat over its '
                            f'outputs); {type(head).__name__} is not one')
        return head.loss_by_feat(output, data_samples)

    def loss(self, inputs: Tensor | dict, data_samples: SampleList | dict
             ) -> dict[str, Tensor]:
        """Distillation on a labelled batch; on a source/target batch
        (:class:`~mmseg_uncert.datasets.SourceTargetDataset`, domain
        adaptation) the source learns its labels (``decode.``) and the
        unlabelled target is distilled with the teacher's hard labels in
        place of labels (``target.``): ProDA's distillation stage, CE(source)
        + CE(student, argmax q̄) + β·KL(q̄ ‖ student) with β the KD weight."""
        if self.for_inference:
            raise RuntimeError(
                'EnsembleDistiller was built for inference (model.train_cfg=None, '
                'as mmseg.apis.init_model builds it): it has no teacher to learn '
                'from; train with the config\'s own model (train_cfg left out)')
        if not isinstance(inputs, dict):
            return self._distill(inputs, data_samples, pseudo_labels=False)
        teacher = self._teacher_outputs(  # first: see _distill
            inputs['target'], [s.metainfo for s in data_samples['target']])
        source = self._student_forward(self.extract_feat(inputs['source']),
                                       data_samples['source'], with_loss=True)[0]
        target = self._distill(inputs['target'], data_samples['target'],
                               pseudo_labels=True, teacher=teacher)
        return {**source, **add_prefix(target, 'target')}

    def _distill(self, inputs: Tensor, data_samples: SampleList, pseudo_labels: bool,
                 teacher: dict[str, Any] | None = None) -> dict[str, Tensor]:
        metas = [s.metainfo for s in data_samples]
        # CE needs labels; the teacher's targets are defined on every pixel
        # of the image, labelled or not (only batch padding is left out), so
        # that the student also learns where the teacher is unsure: ignored
        # regions, pasted unknown patches, unlabelled images.
        labelled = ['gt_sem_seg' in s for s in data_samples]
        if any(labelled) and not all(labelled):
            raise ValueError(
                f'EnsembleDistiller: a batch mixes labelled and unlabelled images '
                f'(e.g. {metas[labelled.index(False)].get("img_path", "?")} has no '
                f'gt_sem_seg); load labels for all of them or for none')
        labelled = all(labelled) and not pseudo_labels
        teacher = teacher or self._teacher_outputs(inputs, metas)  # first
        x = self.extract_feat(inputs)
        losses, logits, raw, feature, output = self._student_forward(
            x, data_samples, with_loss=labelled)
        kd_where = None  # the image's pixels, unless pseudo-labels narrow it
        if pseudo_labels:
            # the teacher's prediction is the label; batch padding is ignored
            size = inputs.shape[2:]
            prob = teacher['prob']
            prob = prob if prob.shape[2:] == size else resize(
                prob, size, mode='bilinear', align_corners=self.align_corners)
            confidence, label = prob.max(1)
            keep = image_mask(metas, size, inputs.device)
            if self.pseudo_label_threshold > 0:
                keep &= confidence >= self.pseudo_label_threshold
            label = label.masked_fill(~keep, self.final_decode_head.ignore_index)
            kd_where = keep  # the KD keeps to the confident pixels
            data_samples = [SegDataSample(metainfo=m, gt_sem_seg=PixelData(data=l[None]))
                            for m, l in zip(metas, label)]
            # the head's own loss against the teacher's labels
            losses.update(add_prefix(self._pseudo_label_loss(output, data_samples),
                                     self._decode_prefix()))
            labelled = True
        size = inputs.shape[2:]
        if labelled:
            if self.with_auxiliary_head:
                losses.update(self._auxiliary_head_forward_train(x, data_samples))
            size = data_samples[0].gt_sem_seg.data.shape[1:]
        image = image_mask(metas, size, inputs.device, input_size=inputs.shape[2:])

        def fit(t: Tensor) -> Tensor:
            return t if t.shape[2:] == size else resize(
                t, size=size, mode='bilinear', align_corners=self.align_corners)

        if self.kd_loss is not None:
            losses[f'distill.{self.kd_loss.loss_name}'] = self.kd_loss(
                fit(logits), fit(teacher['prob']), image if kd_where is None else kd_where)
        if self.with_dirichlet:
            loss_d = self.final_decode_head.loss_distribution
            losses[f'distill.{loss_d.loss_name}'] = loss_d(
                fit(logits), fit(teacher['mean_log_prob']),
                image if kd_where is None else kd_where)
        if raw is not None:
            target = torch.stack([teacher['maps'][self.uncertainty_targets[name]]
                                  for name in self.final_decode_head.uncertainty_names], 1)
            # compared at the branch's own resolution, the teacher's maps
            # averaged over each output cell: upsampling bins x channels raw
            # outputs to the label's size would cost more than the rest of
            # the step (a 1.16 s step fell to 0.59 s for Fast-SCNN students)
            cells = raw.shape[2:]
            target = F.interpolate(target, size=cells, mode='area')
            inside = F.interpolate(image[:, None].float(), size=cells, mode='area')[:, 0]
            loss_u = self.final_decode_head.loss_uncertainty
            losses[f'distill.{loss_u.loss_name}'] = loss_u(raw, target, inside > 0.5)
        if self.pairwise_loss is not None:
            losses[f'distill.{self.pairwise_loss.loss_name}'] = self.pairwise_loss(
                feature, teacher['affinity'], teacher['grid'])
        if self.mimic_loss is not None:
            losses[f'distill.{self.mimic_loss.loss_name}'] = self.mimic_loss(
                feature, teacher['feature'])
        return losses


def _check_finite(outputs: dict[str, Tensor], metas: list[dict]) -> None:
    """A NaN or infinite teacher output would silently poison the student:
    stop, naming the image and the map. One host sync for all of them."""
    bad = torch.stack([~torch.isfinite(v.flatten(1)).all(1) for v in outputs.values()])
    if bool(bad.any()):
        m, i = (int(k) for k in bad.nonzero()[0])
        raise FloatingPointError(
            f'EnsembleDistiller: the teacher\'s {list(outputs)[m]!r} map is NaN or '
            f'infinite on image {metas[i].get("img_path", f"#{i} of the batch")}; '
            f'check the teacher checkpoints (and, with teacher_autocast, '
            f'overflow in half precision)')


def _teacher_models(teacher: PredictiveSegmentor) -> Sequence:
    """The segmentors inside a teacher (ensemble members, or the MC or TTA
    model), whose heads the feature terms tap."""
    from .tta_segmentor import TTASegmentor
    if isinstance(teacher, TTASegmentor) and any(teacher.flips):
        # a flipped view's features are mirrored: they would be compared with
        # the student's at the wrong places (rescaled views are fine: both
        # terms pool or resize the features to the student's grid)
        raise ValueError('EnsembleDistiller: pair-wise KD and feature mimic read '
                         'the teacher\'s features, and a TTASegmentor teacher\'s '
                         'flipped views give mirrored ones; use flips=(False,) '
                         'with scales only, or drop pairwise_loss and mimic_loss')
    return list(teacher.members) if hasattr(teacher, 'members') else [teacher.model]


def _sources(teacher: PredictiveSegmentor) -> str:
    infos = getattr(teacher, 'member_info', None) or [getattr(teacher, 'info', {})]
    return ', '.join(str(i.get('source')) for i in infos)

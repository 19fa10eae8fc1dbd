"""Distil frozen uncertainty teachers into one student with a DualHead."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import ConfigType, OptConfigType, SampleList, add_prefix

from ..data_preprocessors import image_mask
from ..decode_heads.dirichlet_head import DirichletHead
from ..decode_heads.dual_head import DualHead
from ..decode_heads.head_taps import HeadTap, MaskQueryTap, tap_head
from ..frozen import FrozenChildren
from ..strong_view import strong_view, view_generator
from .cascade import OptionalCascade
from .distillation_teacher import (CLASS_STD, TeacherOutputs, build_teacher,
                                   carried_to_view, check_targets,
                                   feature_taps, teacher_outputs)
from .members import mmseg_scope
from .pseudo_labels import pseudo_labelled_samples, pseudo_labels
from .student_init import (DISTILLATION_LOSSES, drop_distillation_weights,
                           load_student_checkpoint)
from .deployment import TrainingWrapper
from .uncertainty_encoder_decoder import UncertaintyEncoderDecoder


@MODELS.register_module()
class EnsembleDistiller(TrainingWrapper, FrozenChildren, OptionalCascade,
                        UncertaintyEncoderDecoder):
    """A student EncoderDecoder with a :class:`DualHead`, trained from frozen
    teachers that know their uncertainty (docs/components/ensemble_distiller.md).

    Per batch the teacher (an ensemble, MC-dropout or TTA model) runs first,
    one member at a time under ``no_grad``
    (:func:`~.distillation_teacher.teacher_outputs`), then the student. Its
    loss is

        CE(labels) [the head's own loss_decode]
        + pixel KD  T²·KL(q̄_T ‖ softmax(z_s/T))          (``kd_loss``)
        + uncertainty regression of the named maps         (DualHead's loss)
        or EnD²'s Dirichlet NLL of the members             (DirichletHead's loss)
        + pair-wise KD of feature affinities (optional)    (``pairwise_loss``)
        + feature mimic through a 1x1 adapter (optional)   (``mimic_loss``),

    CE and KD at the label's size, the uncertainty regression at the branch's
    own output resolution (the teacher's maps averaged over each cell). CE
    is over labelled pixels; the teacher's terms over every pixel of the
    image (batch padding excluded): where the teacher is unsure is what the
    student must learn. Unlabelled batches train the teacher's terms alone;
    source/target batches train ProDA's distillation stage (:meth:`loss`).
    Distillation keys are prefixed ``distill.``.

    The teacher is a frozen child (:mod:`~mmseg_uncert.models.frozen`), so
    checkpoints hold the student alone, under the keys of an
    :class:`UncertaintyEncoderDecoder` with the same head; ``predict`` runs
    the student alone. With a :class:`DirichletHead` the student is fitted
    by EnD²; a plain decode head is distilled without an uncertainty term.

    Args:
        teacher: see :func:`~.distillation_teacher.build_teacher`.
        num_stages: a cascade's number of decode heads (checked).
        backbone, decode_head (a DualHead, or a list whose last one is),
            data_preprocessor, **network (neck, auxiliary_head, test_cfg,
            pretrained, init_cfg): the student, as for mmseg's EncoderDecoder.
        train_cfg: the student's. ``None`` (``mmseg.apis.init_model``)
            builds the student alone, for inference: no teacher, ``loss``
            raises. A training config leaves it out (``{}``).
        kd_loss, pairwise_loss, mimic_loss: the distillation loss configs,
            or None (mimic's channels are filled in).
        uncertainty_targets: ``{channel name: teacher map name}`` for the
            DualHead's regressed channels (its derived maps have no target),
            by default the same name; ``class_std/<c>`` is the members'
            spread of class c.
        teacher_autocast: run the teacher under autocast even when the
            student trains in full precision.
        pseudo_label_threshold: on target batches, pixels where the teacher's
            top probability is below it are ignored by CE and KD (0 keeps all).
        student_init: a plain segmentor checkpoint of the student's
            architecture to start from (:mod:`~.student_init`).
        target_view, view_seed: on target batches the student sees the
            teacher's ``'weak'`` view, or (ProDA) a ``'strong'`` view of it
            seeded by ``view_seed`` (:func:`~.carried_to_view`).
    """

    requires_uncertainty_head = False
    training_only_parts = ('teacher', *DISTILLATION_LOSSES)

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
                 target_view: str = 'weak',
                 view_seed: int = 0,
                 num_stages: int | None = None,
                 train_cfg: OptConfigType = {},
                 data_preprocessor: OptConfigType = None,
                 **network: Any) -> None:
        self._init_network(train_cfg, data_preprocessor, backbone=backbone,
                           decode_head=decode_head, **network)
        head = self.final_decode_head
        if self.num_stages > 1 and isinstance(head, DirichletHead):
            raise TypeError('EnsembleDistiller: a DirichletHead cannot end a cascade (it '
                            'does not pass the previous stage\'s output on); use a '
                            'DualHead as the last stage')
        if num_stages is not None and num_stages != self.num_stages:
            raise ValueError(f'EnsembleDistiller: num_stages={num_stages} but decode_head '
                             f'lists {self.num_stages} heads')
        if not 0.0 <= pseudo_label_threshold < 1.0:
            raise ValueError(f'EnsembleDistiller: pseudo_label_threshold must lie in '
                             f'[0, 1), got {pseudo_label_threshold}')
        _check_target_view(target_view, pairwise_loss or mimic_loss)
        self.with_uncertainty = isinstance(head, DualHead)
        self.with_dirichlet = isinstance(head, DirichletHead)
        if not self.with_uncertainty:  # the features a plain head predicts from
            self.student_tap: HeadTap = tap_head(self.segmentation_head, 'EnsembleDistiller')
        self.teacher_autocast = teacher_autocast
        self.pseudo_label_threshold = pseudo_label_threshold
        self.target_view, self.view_seed = target_view, view_seed
        self.student_init = student_init
        self.kd_loss = self.pairwise_loss = self.mimic_loss = None
        self.teacher_taps: list[HeadTap] = []
        self.uncertainty_targets: dict[str, str] = {}
        if self.for_inference:  # the student alone
            self.register_module('teacher', None)
            self.register_load_state_dict_pre_hook(drop_distillation_weights)
            return
        self.add_frozen('teacher', build_teacher(teacher, self.num_classes,
                                                 data_preprocessor))
        # a DirichletHead's maps follow from its logits: no target to regress
        targets = dict(uncertainty_targets or {})
        regressed = head.regressed_names if self.with_uncertainty else ()
        if set(targets) - set(regressed):
            raise ValueError(f'EnsembleDistiller: uncertainty_targets names channels '
                             f'{sorted(set(targets) - set(regressed))} that the student '
                             f'does not regress; its regressed maps are {list(regressed)}')
        self.uncertainty_targets = {name: targets.get(name, name) for name in regressed}
        check_targets(self.uncertainty_targets, self.num_classes)
        with mmseg_scope():
            self.kd_loss = MODELS.build(kd_loss) if kd_loss else None
            self.pairwise_loss = MODELS.build(pairwise_loss) if pairwise_loss else None
            if pairwise_loss or mimic_loss:
                self.teacher_taps = feature_taps(self.teacher)
            if mimic_loss:
                channels = {t.feature_channels for t in self.teacher_taps}
                if len(channels) != 1:
                    raise ValueError(f'EnsembleDistiller: feature mimic needs '
                                     f'teacher members with equal feature '
                                     f'channels, got {sorted(channels)}')
                student = (head.feature_channels if self.with_uncertainty
                           else self.student_tap.feature_channels)
                self.mimic_loss = MODELS.build(dict(
                    mimic_loss, student_channels=student, teacher_channels=channels.pop()))

    @property
    def segmentation_head(self) -> nn.Module:
        """The head that gives the student's logits (the one a DualHead or
        DirichletHead wraps)."""
        head = self.final_decode_head
        return head.head if self.with_uncertainty or self.with_dirichlet else head

    def init_weights(self) -> None:
        """mmengine's initialisation, then :attr:`student_init`'s weights."""
        super().init_weights()
        if self.student_init:
            load_student_checkpoint(self, self.student_init)

    def _teacher_outputs(self, inputs: Tensor, metas: list[dict]) -> TeacherOutputs:
        """The teacher's outputs for this student's terms."""
        head = self.final_decode_head
        return teacher_outputs(
            self.teacher, inputs, metas,
            temperature=self.kd_loss.temperature if self.kd_loss else 1.0,
            half=self.teacher_autocast, taps=self.teacher_taps,
            pairwise_grid=self.pairwise_loss.grid if self.pairwise_loss else None,
            mean_feature=self.mimic_loss is not None,
            log_prob=head.loss_distribution.log_prob if self.with_dirichlet else None,
            class_std=any(t.startswith(CLASS_STD) for t in self.uncertainty_targets.values()),
            checked=sorted(set(self.uncertainty_targets.values())))

    def _student_forward(self, x: Sequence[Tensor], data_samples: SampleList,
                         with_loss: bool
                         ) -> tuple[dict[str, Tensor], Tensor, Tensor | None, Tensor, Any]:
        """The student's segmentation losses (``with_loss``: the heads' own,
        a cascade's earlier stages included), class scores (B, C, h, w), raw
        uncertainty outputs (a DualHead's, else None), the features its
        prediction is made from, and without a loss the final head's whole
        forward output (for a pseudo-labelled loss)."""
        prev, losses = self.earlier_stages(x, data_samples if with_loss else None)
        head, prefix = self.final_decode_head, self.decode_prefix()
        metas = [s.metainfo for s in data_samples]
        if self.with_uncertainty:
            if with_loss:
                own, logits, raw, feature = head.loss_and_outputs(
                    x, *prev, data_samples, self.train_cfg)
                losses.update(add_prefix(own, prefix))
                return losses, logits, raw, feature, None
            output, logits, raw, feature = head.forward_all(x, *prev, batch_img_metas=metas)
            return losses, logits, raw, feature, output
        with self.student_tap:
            if self.with_dirichlet:
                output = head.forward_logits(x)
                if with_loss:
                    losses.update(add_prefix(head.head.loss_by_feat(output, data_samples),
                                             prefix))
            elif with_loss:
                output = None
                losses.update(add_prefix(head.loss(x, *prev, data_samples, self.train_cfg),
                                         prefix))
            elif isinstance(self.student_tap, MaskQueryTap):
                output = head(x, [SegDataSample(
                    metainfo=dict(m, batch_input_shape=m['img_shape'])) for m in metas])
            else:
                output = head(x, *prev)
            feature, logits = self.student_tap.take(x)
        if self.with_dirichlet:
            logits = output  # what the wrapped head returns, as it predicts
        return losses, logits, None, feature, None if with_loss else output

    def loss(self, inputs: Tensor | dict, data_samples: SampleList | dict
             ) -> dict[str, Tensor]:
        """Distillation on a labelled (or unlabelled) batch; on a
        source/target batch (domain adaptation) the source learns its labels
        (``decode.``) and the target is distilled with the teacher's hard
        labels in place of labels (``target.``): ProDA's distillation stage,
        CE(source) + CE(student, argmax q̄) + β·KL(q̄ ‖ student)."""
        self._check_trainable('teacher to learn from')
        if not isinstance(inputs, dict):
            return self._distill(inputs, data_samples)
        # the teacher first, before any student graph is alive
        target_inputs = inputs['target']
        teacher = self._teacher_outputs(target_inputs,
                                        [s.metainfo for s in data_samples['target']])
        if self.target_view == 'strong':
            view = strong_view(target_inputs, self.data_preprocessor.mean,
                               self.data_preprocessor.std, generator=view_generator(
                                   self.view_seed, target_inputs.device))
            target_inputs, teacher = view.image, carried_to_view(teacher, view)
        source = self._student_forward(self.extract_feat(inputs['source']),
                                       data_samples['source'], with_loss=True)[0]
        target = self._distill(target_inputs, data_samples['target'], teacher)
        return {**source, **add_prefix(target, 'target')}

    def _distill(self, inputs: Tensor, data_samples: SampleList,
                 pseudo_labelled_from: TeacherOutputs | None = None) -> dict[str, Tensor]:
        """The student's losses on one batch; with ``pseudo_labelled_from``
        (the teacher's outputs on an unlabelled target batch) its hard
        labels stand in for the labels."""
        metas = [s.metainfo for s in data_samples]
        labelled = ['gt_sem_seg' in s for s in data_samples]
        if any(labelled) and not all(labelled):
            raise ValueError(
                f'EnsembleDistiller: a batch mixes labelled and unlabelled images '
                f'(e.g. {metas[labelled.index(False)].get("img_path", "?")} has no '
                f'gt_sem_seg); load labels for all of them or for none')
        pseudo = pseudo_labelled_from is not None
        labelled = all(labelled) and not pseudo
        teacher = pseudo_labelled_from or self._teacher_outputs(inputs, metas)  # first
        x = self.extract_feat(inputs)
        losses, logits, raw, feature, output = self._student_forward(
            x, data_samples, with_loss=labelled)
        size = inputs.shape[2:]
        kd_where = None  # the image's pixels, unless pseudo-labels narrow it
        if pseudo:
            prob = teacher.prob if teacher.prob.shape[2:] == size else resize(
                teacher.prob, size, mode='bilinear', align_corners=self.align_corners)
            # a pixel where the teacher has no probability (a strong view's
            # pixel without content) carries no label
            label, kd_where, _ = pseudo_labels(
                prob, image_mask(metas, size, inputs.device) & (prob.sum(1) > 0),
                self.final_decode_head.ignore_index, self.pseudo_label_threshold)
            data_samples = pseudo_labelled_samples(label, metas)
            if not isinstance(self.segmentation_head, BaseDecodeHead):
                raise TypeError(f'EnsembleDistiller: pseudo-labelled target batches need '
                                f'a BaseDecodeHead student (its loss_by_feat over its '
                                f'outputs); {type(self.segmentation_head).__name__} is '
                                f'not one')
            # the head's own loss (auxiliary outputs included) against them
            losses.update(add_prefix(self.segmentation_head.loss_by_feat(
                output, data_samples), self.decode_prefix()))
            labelled = True
        if labelled:
            if self.with_auxiliary_head:
                losses.update(self._auxiliary_head_forward_train(x, data_samples))
            size = data_samples[0].gt_sem_seg.data.shape[1:]
        image = image_mask(metas, size, inputs.device, input_size=inputs.shape[2:])
        where = image if kd_where is None else kd_where

        def fit(t: Tensor) -> Tensor:
            return t if t.shape[2:] == size else resize(
                t, size=size, mode='bilinear', align_corners=self.align_corners)

        head = self.final_decode_head
        if self.kd_loss is not None:
            losses[f'distill.{self.kd_loss.loss_name}'] = self.kd_loss(
                fit(logits), fit(teacher.prob), where)
        if self.with_dirichlet:
            losses[f'distill.{head.loss_distribution.loss_name}'] = head.loss_distribution(
                fit(logits), fit(teacher.mean_log_prob), where)
        if raw is not None:
            target = torch.stack([teacher.maps[self.uncertainty_targets[name]]
                                  for name in head.regressed_names], 1)
            # at the branch's own resolution, the teacher's maps averaged
            # over each output cell: upsampling bins x channels raw outputs
            # to the label's size would cost more than the rest of the step
            # (a 1.16 s step fell to 0.59 s for Fast-SCNN students)
            cells = raw.shape[2:]
            target = F.interpolate(target, size=cells, mode='area')
            inside = F.interpolate(image[:, None].float(), size=cells, mode='area')[:, 0]
            losses[f'distill.{head.loss_uncertainty.loss_name}'] = head.loss_uncertainty(
                raw, target, inside > 0.5)
        if self.pairwise_loss is not None:
            losses[f'distill.{self.pairwise_loss.loss_name}'] = self.pairwise_loss(
                feature, teacher.affinity, teacher.grid)
        if self.mimic_loss is not None:
            losses[f'distill.{self.mimic_loss.loss_name}'] = self.mimic_loss(
                feature, teacher.feature)
        return losses


def _check_target_view(target_view: str, with_features: bool) -> None:
    if target_view not in ('weak', 'strong'):
        raise ValueError(f"EnsembleDistiller: target_view must be 'weak' or "
                         f"'strong', got {target_view!r}")
    if target_view == 'strong' and with_features:
        raise ValueError("EnsembleDistiller: target_view='strong' carries the "
                         "teacher's probabilities and maps to the strong view, not "
                         "its features: leave pairwise_loss and mimic_loss out")

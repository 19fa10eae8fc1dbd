"""Frozen models held as ordinary children of a trainable model.

A distillation teacher, ProDA's warm-up pseudo-labeller and its momentum
network are models that a trainable model runs but never trains. Registered
as ordinary children, they move with the model (``.to()``, ``.cuda()``,
``.half()``, ``.double()``), as mmrazor's teachers do; :class:`FrozenChildren`
then gives them, in this one place, what a frozen model needs:

* no gradient: every parameter has ``requires_grad=False`` (and
  :class:`TrainableOptimWrapperConstructor` leaves them out of the optimizer);
* eval mode through every ``train()``: dropout off, BatchNorm statistics fixed;
* not in checkpoints: ``state_dict()`` leaves their keys out, and
  ``load_state_dict()`` keeps their weights whatever the checkpoint holds, so
  a checkpoint of the trainable part loads strictly into the whole model;
* not in DDP: their parameters and buffers are listed in
  ``_ddp_params_and_buffers_to_ignore``, so DDP neither tracks them for
  gradients (no unused-parameter error) nor broadcasts their buffers;
* not re-initialised: mmengine's ``init_weights`` skips them, since they
  already carry trained weights.
"""
from __future__ import annotations

from typing import Any

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS


def _drop_frozen_state(module: nn.Module, state_dict: dict, prefix: str,
                       local_metadata: Any) -> None:
    """state_dict post-hook: the frozen children's entries are removed."""
    for name in module._frozen_children:
        child_prefix = f'{prefix}{name}.'
        for key in [k for k in state_dict if k.startswith(child_prefix)]:
            del state_dict[key]


def _keep_frozen_state(module: nn.Module, state_dict: dict, prefix: str,
                       *args: Any) -> None:
    """load_state_dict pre-hook: the frozen children's entries are set to
    their current values, so that what they loaded from their own checkpoints
    is kept and a strict load of a checkpoint without them succeeds."""
    for name in module._frozen_children:
        child_prefix = f'{prefix}{name}.'
        for key in [k for k in state_dict if k.startswith(child_prefix)]:
            del state_dict[key]
        for key, value in getattr(module, name).state_dict().items():
            state_dict[child_prefix + key] = value


class FrozenChildren:
    """Mixin for an ``nn.Module`` that holds frozen models as children.

    Put it first among the bases (``class Distiller(FrozenChildren,
    EncoderDecoder)``) and call :meth:`add_frozen` in ``__init__`` after the
    base class is initialised. The model must be the root that DDP wraps
    (the names DDP ignores are relative to it).
    """

    def add_frozen(self, name: str, child: nn.Module) -> nn.Module:
        """Register ``child`` as ``self.<name>`` and freeze it (see the
        module docstring). Returns the child."""
        child.requires_grad_(False)
        child.eval()
        if hasattr(child, '_is_init'):  # an mmengine BaseModule
            child._is_init = True
        if '_frozen_children' not in self.__dict__:
            self._frozen_children: list[str] = []
            self.register_state_dict_post_hook(_drop_frozen_state)
            self.register_load_state_dict_pre_hook(_keep_frozen_state)
        self.add_module(name, child)
        if name not in self._frozen_children:
            self._frozen_children.append(name)
        self._ddp_params_and_buffers_to_ignore = [
            f'{frozen}.{key}' for frozen in self._frozen_children
            for key, _ in _named_tensors(getattr(self, frozen))]
        return child

    def frozen_children(self) -> dict[str, nn.Module]:
        """The frozen children by name."""
        return {name: getattr(self, name)
                for name in self.__dict__.get('_frozen_children', ())}

    def train(self, mode: bool = True) -> 'FrozenChildren':
        """Train mode for the model; the frozen children stay in eval."""
        super().train(mode)
        for child in self.frozen_children().values():
            child.eval()
        return self


def _named_tensors(module: nn.Module) -> list[tuple[str, Any]]:
    return [*module.named_parameters(), *module.named_buffers()]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, with every parameter that does not
    require a gradient left out of the optimizer (mmengine's own passes them
    all in when there is no ``paramwise_cfg``, and warns about each frozen
    one when there is).

    Select it with ``optim_wrapper = dict(constructor=
    'TrainableOptimWrapperConstructor', ...)``; the distillation and domain
    adaptation configs do.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = model.module if hasattr(model, 'module') else model
        if self.paramwise_cfg:
            return super().__call__(model)  # add_params leaves them out
        # mmengine then hands model.parameters() to the optimizer: give it a
        # container of the trainable parameters themselves (not copies)
        return super().__call__(
            nn.ParameterList(p for p in model.parameters() if p.requires_grad))

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: int | float | None = None) -> None:
        """mmengine's per-parameter groups, without frozen submodules."""
        if not any(p.requires_grad for p in module.parameters()):
            return  # a frozen model: nothing to optimise, nothing to warn about
        super().add_params(params, module, prefix, is_dcn_module)

"""Reading the features an mmseg decode head hands to its classifier.

Heteroscedastic and dual heads, and distillation from a teacher's features,
need exactly what the 1x1 classifier ``conv_seg`` sees, for any head; a
forward pre-hook on ``conv_seg`` gives it without changing the head.
"""
from __future__ import annotations

from torch import Tensor, nn


def _keep_input(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook of a head's classifier: keep the features it sees.
    A module-level function writing to the module itself, so the hook stays
    right when the model is deep-copied (e.g. for an EMA model)."""
    module.tapped_input = args[0]


def tap_classifier(head: nn.Module, wrapper: str) -> nn.Conv2d:
    """Hook the 1x1 classifier (``conv_seg``) of an mmseg decode head; its
    input is then left in ``conv_seg.tapped_input`` after each forward."""
    conv_seg = getattr(head, 'conv_seg', None)
    if not isinstance(conv_seg, nn.Conv2d):
        raise TypeError(
            f'{wrapper} needs a decode head whose classifier is a conv_seg '
            f'Conv2d (mmseg BaseDecodeHead subclasses); {type(head).__name__} '
            f'has none')
    conv_seg.register_forward_pre_hook(_keep_input)
    return conv_seg


def pop_tapped(conv_seg: nn.Conv2d) -> Tensor | None:
    """The features the classifier read in its latest call (once), or None
    if it has not been called since."""
    return conv_seg.__dict__.pop('tapped_input', None)


def take_tapped(conv_seg: nn.Conv2d, wrapper: str) -> Tensor:
    """As :func:`pop_tapped`, for a head that must have called it."""
    feature = pop_tapped(conv_seg)
    if feature is None:
        raise RuntimeError(f'{wrapper}: the wrapped head did not call its '
                           f'classifier conv_seg in forward')
    return feature


def pre_dropout_module(head: nn.Module, wrapper: str) -> nn.Module:
    """The module whose input is the classifier's feature *before* dropout:
    the head's ``dropout`` layer when it has one, else ``conv_seg``. Models
    that compare features across train and eval mode (ProDA's prototypes:
    a momentum copy in eval against the model in training) tap it, so that
    dropout's zeros and 1/(1 − p) scaling do not enter the comparison."""
    tap_classifier(head, wrapper)  # checks the head has a conv_seg classifier
    dropout = getattr(head, 'dropout', None)
    if isinstance(dropout, nn.Module):
        dropout.register_forward_pre_hook(_keep_input)
        return dropout
    return head.conv_seg

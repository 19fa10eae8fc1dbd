"""Full precision for the maths that half precision cannot carry.

Under mixed precision (``tools/train.py --amp``, ``teacher_autocast``) the
network runs in float16 or bfloat16, and so would every op of a loss that
autocast does not list as a float32 op (``erf``, ``logsumexp``, the
matrix products of affinities and prototype distances). Logs of small
probabilities, the log-mean-exp of the heteroscedastic loss, softmaxes over
64 bins and squared distances that cancel lose their meaning there. The
functions decorated here compute in at least float32 whatever the inputs
and the autocast state, and keep float64 when given it.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor

Function = TypeVar('Function', bound=Callable[..., Any])


def at_least_float32(value: Any) -> Any:
    """A floating tensor promoted to at least float32 (float64 stays);
    anything else unchanged."""
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.to(torch.promote_types(value.dtype, torch.float32))
    return value


def in_float32(function: Function) -> Function:
    """Run ``function`` with autocast off and its floating tensor arguments
    in at least float32 (see the module docstring). Only tensors passed as
    arguments are promoted, not tensors inside lists or dicts."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        device_type = tensors[0].device.type if tensors else 'cpu'
        with torch.autocast(device_type, enabled=False):
            return function(*map(at_least_float32, args),
                            **{k: at_least_float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]

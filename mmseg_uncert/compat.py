"""The few fixes the OpenMMLab stack needs on current PyTorch.

Two things break with mmengine 0.10.7 / mmseg 1.2.2 on torch >= 2.6:

1. **Checkpoints.** ``torch.load`` defaults to ``weights_only=True`` since
   torch 2.6 and mmengine calls it without the argument, so ``--resume`` and
   ``load_from`` of mmengine's own checkpoints fail on the message hub's
   ``HistoryBuffer`` and numpy scalars. Turning ``weights_only`` off would let
   any checkpoint run code on load; instead :func:`register_checkpoint_safe_globals`
   allow-lists exactly the types those checkpoints carry, and
   :func:`load_from_local` (registered as mmengine's loader for local files)
   turns a refusal into an error that names the refused global and how to
   trust it. torch's own opt-out, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``,
   keeps working as with any ``torch.load``.
2. **Multi-process training without a GPU.** mmengine's ``pytorch`` launcher
   calls ``torch.cuda.set_device`` and its default DDP wrapper passes
   ``device_ids=[LOCAL_RANK]``; both fail on CPU. :func:`init_cpu_distributed`
   starts a ``gloo`` process group itself (the runner then skips its own
   initialisation) and :func:`cpu_model_wrapper_cfg` gives DDP no device ids.
   With CUDA available nothing is changed: mmengine's nccl path runs as usual.
"""
from __future__ import annotations

import codecs
import collections
import importlib
import os
import os.path as osp
import pickle
import re
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

#: Environment variable with extra globals a user trusts in checkpoints,
#: comma separated ``module.qualname`` entries (e.g. ``mypkg.stats.Running``).
TRUSTED_GLOBALS_ENV = 'MMSEG_UNCERT_TRUSTED_GLOBALS'

#: torch's own switch to load without ``weights_only`` (it runs any code a
#: checkpoint pickles); ``torch.load`` reads it when the caller does not pass
#: ``weights_only``.
TORCH_NO_WEIGHTS_ONLY_ENV = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'


#: HistoryBuffer's built-in statistics; it adds them to its registry only when
#: a first buffer is created, which a fresh process loading a checkpoint has
#: not done yet.
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'mean', 'current')


def _history_buffer_statistic(owner: type, name: str) -> Callable:
    """Stand-in for ``builtins.getattr`` inside the checkpoint unpickler.

    A pickled ``HistoryBuffer`` references its statistics methods as
    ``getattr(HistoryBuffer, 'min')``. Allow-listing the real ``getattr`` would
    let a checkpoint reach any attribute of any allowed object, so this resolves
    only HistoryBuffer's statistics methods (built-in or registered).
    """
    allowed = set(HISTORY_BUFFER_STATISTICS) | set(
        HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({owner!r}, {name!r}); only the '
        f'statistics methods of HistoryBuffer ({sorted(allowed)}) are allowed')


def _numpy_checkpoint_globals() -> list:
    """Numpy objects that pickled arrays and scalars refer to.

    Registered under both the numpy 2 (``numpy._core``) and numpy 1
    (``numpy.core``) module names so checkpoints written with either load.
    """
    from numpy._core import multiarray
    objs: list = [np.ndarray, np.dtype, multiarray._reconstruct,
                  multiarray.scalar,
                  (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
                  (multiarray.scalar, 'numpy.core.multiarray.scalar')]
    # Since numpy 1.25 a pickled dtype names its class (e.g. Float64DType).
    objs += [cls for cls in vars(np.dtypes).values()
             if isinstance(cls, type) and issubclass(cls, np.dtype)]
    return objs


def checkpoint_safe_globals() -> list:
    """Everything an mmengine / mmseg runner checkpoint pickles beyond tensors."""
    return [
        HistoryBuffer,
        collections.OrderedDict,
        codecs.encode,
        (_history_buffer_statistic, 'builtins.getattr'),
        *_numpy_checkpoint_globals(),
    ]


def _resolve(qualified_name: str) -> Any:
    """Import ``module.attr[.attr]`` given as one dotted string."""
    parts = qualified_name.split('.')
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f'cannot import {qualified_name!r}')


def trust_checkpoint_globals(names: Iterable[str]) -> None:
    """Explicitly allow more globals in checkpoints (``module.qualname``).

    Only do this for checkpoints whose origin you trust: a pickled global is
    called while loading.
    """
    objs = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        try:
            objs.append((_resolve(name), name))
        except (ImportError, AttributeError) as err:
            raise ValueError(
                f'{TRUSTED_GLOBALS_ENV} / trust_checkpoint_globals: cannot '
                f'import {name!r} ({err}); give it as module.qualname') from err
    torch.serialization.add_safe_globals(objs)


def register_checkpoint_safe_globals() -> None:
    """Allow-list the checkpoint types (idempotent) plus user-trusted ones."""
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    trust_checkpoint_globals(os.environ.get(TRUSTED_GLOBALS_ENV, '').split(','))


_REFUSED_GLOBAL = re.compile(r'GLOBAL\s+([\w.]+)')
#: How torch starts the message of a refusal by its weights-only unpickler.
_WEIGHTS_ONLY_FAILURE = 'Weights only load failed'


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """mmengine loader for local checkpoint files, safe by default.

    Loads with torch's ``weights_only`` unpickler (the default since torch
    2.6, the lowest version supported) and the allow-list above; a checkpoint
    that pickles anything else is refused with an error naming the global and
    the ways to trust it explicitly. ``weights_only`` is left to torch rather
    than passed, so that ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns it off
    (torch warns) and ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` forces it, exactly as
    for any ``torch.load``.

    The name follows mmengine's ``load_from_<backend>`` convention: its
    ``CheckpointLoader`` logs the loader's name after ``load_from_`` as the
    backend ("Loads checkpoint by local backend from path: ...").
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location)
    except pickle.UnpicklingError as err:
        if _WEIGHTS_ONLY_FAILURE not in str(err):
            # a plain unpickling error (weights_only switched off): not a
            # refusal, so nothing to add
            raise
        found = _REFUSED_GLOBAL.search(str(err))
        if found is None:
            raise pickle.UnpicklingError(
                f'Refused to load checkpoint {filename}: {err}\nIf you trust '
                f'this file, {TORCH_NO_WEIGHTS_ONLY_ENV}=1 loads it without '
                f'the weights-only unpickler (any code it pickles runs).'
            ) from err
        refused = found.group(1)
        if '.' not in refused:  # torch names builtins without their module
            refused = f'builtins.{refused}'
        raise pickle.UnpicklingError(
            f'Refused to load checkpoint {filename}: it pickles {refused}, '
            f'which is not among the types mmengine/mmseg checkpoints carry '
            f'(loading it would call that code). If you trust this file, allow '
            f'the global explicitly: export {TRUSTED_GLOBALS_ENV}={refused} '
            f'(comma-separated for several), or call '
            f'mmseg_uncert.compat.trust_checkpoint_globals([{refused!r}]) '
            f'before loading; or, to trust everything in it, torch\'s own '
            f'export {TORCH_NO_WEIGHTS_ONLY_ENV}=1 turns the weights-only '
            f'unpickler off (any code it pickles runs). Original error: {err}'
        ) from err


#: The name the inference API and the tools import.
load_local_checkpoint = load_from_local


def register_checkpoint_loader() -> None:
    """Make :func:`load_from_local` mmengine's loader for local paths."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local,
                                     force=True)


def init_cpu_distributed(launcher: str) -> bool:
    """Start a gloo process group when a multi-process job has no GPU.

    Returns True when it initialised the group. With CUDA available, or for a
    single process (``launcher='none'``), or when a group already exists, it
    does nothing and mmengine's own path (nccl on GPUs) runs.
    """
    if launcher == 'none' or torch.cuda.is_available() or (
            dist.is_available() and dist.is_initialized()):
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f"launcher '{launcher}' without a GPU is not supported: mmengine's "
            f"{launcher} initialisation needs CUDA. Launch CPU processes with "
            f"torchrun and '--launcher pytorch' instead (gloo backend).")
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"--launcher pytorch needs the environment variables {missing}, "
            f"which torchrun sets: run 'torchrun --nproc_per_node=N "
            f"tools/train.py CFG --launcher pytorch'.")
    dist.init_process_group(backend='gloo')
    return True


def cpu_model_wrapper_cfg(model_wrapper_cfg: dict | None,
                          find_unused_parameters: bool = False) -> dict | None:
    """DDP wrapper settings that work on CPU (no ``device_ids``).

    Returns the given config unchanged on GPUs or outside a process group.
    ``find_unused_parameters`` carries the top-level config key that mmengine
    only reads when ``model_wrapper_cfg`` is unset.
    """
    if torch.cuda.is_available() or not (dist.is_available()
                                         and dist.is_initialized()):
        return model_wrapper_cfg
    cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
               find_unused_parameters=find_unused_parameters)
    cfg.update(model_wrapper_cfg or {})
    cfg['device_ids'] = None
    return cfg


def setup_cpu_distributed(cfg: Any) -> None:
    """Prepare a runner config for a multi-process job without a GPU, in place.

    Idempotent; a no-op on GPUs and for single-process jobs.
    """
    init_cpu_distributed(cfg.get('launcher', 'none'))
    wrapper = cpu_model_wrapper_cfg(cfg.get('model_wrapper_cfg'),
                                    cfg.get('find_unused_parameters', False))
    if wrapper is not None:
        cfg.model_wrapper_cfg = wrapper

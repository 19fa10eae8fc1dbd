"""Predictions and uncertainty maps of image files, folders and videos,
written to a folder: what ``tools/infer.py`` runs."""
from __future__ import annotations

import os.path as osp

from mmengine.utils import ProgressBar

from ..models.segmentors import load_config
from .inference_inputs import InferenceInputError, check_out_dir, count_images
from .uncertainty_inferencer import UncertaintyInferencer, _carries_weights


def infer_files(config: str, checkpoint: str | None, source: str, out_dir: str,
                vis: bool = False, device: str | None = None,
                batch_size: int = 1, progress: bool = True) -> int:
    """Run the model of ``config`` on every image of ``source`` and write
    ``out_dir/pred/<name>_pred.png``, ``out_dir/pred/<name>_<map>.npy`` and,
    with ``vis``, ``out_dir/vis/<name>.png`` (see
    :class:`~mmseg_uncert.apis.UncertaintyInferencer`).

    ``source``: an image file, a folder (its images, recursively) or a video
    (its frames, ``<video stem>_<frame:06d>``). ``checkpoint`` may be None
    only for a model whose parts carry their own weights (ensemble, MC
    dropout). Everything that can be checked without the model is checked
    first — the config, the checkpoint, the source, that ``out_dir`` can be
    written — so a mistake costs no model build. Returns how many images
    were done.

    Raises:
        FileNotFoundError: the config or checkpoint does not exist.
        InferenceInputError: the source cannot be read, ``out_dir`` cannot be
            written, a checkpoint is missing for a model that needs one.
    """
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
    if not osp.exists(source):
        raise InferenceInputError(f'input {source} does not exist')
    check_out_dir(out_dir)
    cfg = load_config(config)
    if checkpoint is None and not _carries_weights(cfg.model):
        raise InferenceInputError(
            f"give a checkpoint for {cfg.model.get('type')} ({config}); only "
            f"models whose parts carry their own weights (EnsembleSegmentor, "
            f"MCDropoutSegmentor) run without one ('none')")
    total = count_images(source)  # also lists a folder, opens a video
    inferencer = UncertaintyInferencer(cfg, checkpoint, device=device)
    inferencer.show_progress = False  # the bar below counts images, not batches
    bar = ProgressBar(total) if progress else None
    done = 0
    for _ in inferencer.iter_results(
            source, batch_size=batch_size, out_dir=out_dir,
            img_out_dir='vis' if vis else ''):
        done += 1
        if bar is not None:
            bar.update()
    return done

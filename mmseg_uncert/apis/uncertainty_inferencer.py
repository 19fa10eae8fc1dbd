"""mmseg's inferencer, saving the uncertainty maps beside the prediction."""
from __future__ import annotations

import copy
import os.path as osp
import warnings
from typing import Callable, Iterable, Iterator, Sequence

import mmcv
import mmengine
import numpy as np
from mmcv.transforms import Compose
from mmengine.config import Config, ConfigDict
from mmengine.registry import FUNCTIONS
from mmengine.visualization import Visualizer
from PIL import Image
from rich.progress import track
from torch import nn

from mmseg.apis import MMSegInferencer
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from ..models.segmentors import load_config, mmseg_scope
from ..models.segmentors.deployment import is_training_wrapper
from ..visualization.uncertainty_visualizer import map_names
from .inference import init_uncertainty_model
from .inference_inputs import ImageInput, check_out_dir, named_inputs, read_image

#: transforms that read annotation files, which inference does not have
ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadDepthAnnotation',
                      'LoadUncertaintyAnnotations')
#: the settings of LoadImageFromFile that say how a file is decoded
_READ_KEYS = ('color_type', 'imdecode_backend', 'backend_args')


class UncertaintyInferencer(MMSegInferencer):
    """``MMSegInferencer`` for this package's models: the prediction and every
    ``pred_uncertainty`` map of each image, returned and saved.

    With ``out_dir`` it writes, per image named ``<name>`` (an image file's
    stem, e.g. ``frankfurt_000000_000294_leftImg8bit``; the path relative to
    the folder, without extension, for a folder's images;
    ``<video stem>_<frame:06d>`` for a video's frames; ``names[i]``, else a
    running number ``00000000``, for arrays):

    * ``out_dir/pred/<name>_pred.png``: the class index per pixel (8-bit;
      16-bit where an index exceeds 255), as ``MMSegInferencer`` writes it;
    * ``out_dir/pred/<name>_<map>.npy``: each uncertainty map (``total``,
      ``aleatoric``, ``epistemic``, ...) as a float32 (H, W) array at the
      image's size, exactly the values of the model's ``test_step``
      (lossless: ``np.load`` gives them back bit for bit);
    * ``out_dir/vis/<name>.png``: the visualizer's picture (by default, as
      ``MMSegInferencer`` draws it; ``img_out_dir=''`` draws none).

    The model is built by
    :func:`~mmseg_uncert.apis.init_uncertainty_model`: a distillation or
    ProDA config deploys its student alone, an ensemble or MC-dropout config
    needs no ``weights``. The test pipeline runs without its annotation
    loaders (:data:`ANNOTATION_LOADERS`). A config whose visualizer is mmseg's
    plain ``SegLocalVisualizer`` draws with
    :class:`~mmseg_uncert.visualization.UncertaintyVisualizer` (same
    arguments), which adds the maps; any other visualizer is kept.

    Images are processed ``batch_size`` at a time and their files written as
    each batch is done (:meth:`iter_results`); ``__call__`` gathers the
    results as ``MMSegInferencer`` does, with ``uncertainty`` added:
    ``{name: (H, W) float32 array}`` per image.
    """

    def __init__(self,
                 model: str | Config | ConfigDict,
                 weights: str | None = None,
                 classes: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None,
                 dataset_name: str | None = None,
                 device: str | None = None,
                 scope: str | None = 'mmseg') -> None:
        if isinstance(model, str):
            # a missing file is named here; mmengine would look for a model
            # zoo name and fail with "Cannot find model"
            model = load_config(model)
        super().__init__(model, weights, classes, palette, dataset_name,
                         device, scope)

    def _init_model(self, cfg: Config | ConfigDict, weights: str | None,
                    device: str = 'cpu') -> nn.Module:
        """The deployable network (see :func:`init_uncertainty_model`) on
        ``device``, in eval mode."""
        cfg = cfg if isinstance(cfg, Config) else Config(cfg.to_dict())
        if weights is None and not _carries_weights(cfg.model):
            warnings.warn(
                f'no weights given for {cfg.model.get("type")}: its predictions '
                f'come from random initialisation')
        model = init_uncertainty_model(cfg, weights)
        return model.to(device).eval()

    def _init_pipeline(self, cfg: Config | ConfigDict) -> Compose:
        """The test pipeline, fed decoded images: ``LoadImageFromFile``
        becomes ``LoadImageFromNDArray`` (paths are decoded with its
        settings by :meth:`_decode`), the annotation loaders are dropped."""
        pipeline_cfg = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
        kept = [t for t in pipeline_cfg if t['type'] not in ANNOTATION_LOADERS]
        loaders = [i for i, t in enumerate(kept) if t['type'] == 'LoadImageFromFile']
        if len(loaders) != 1:
            raise ValueError(
                f'test_dataloader.dataset.pipeline has {len(loaders)} '
                f'LoadImageFromFile transforms; the inferencer needs exactly one '
                f'(it reads the image), got '
                f'{[t["type"] for t in pipeline_cfg]}')
        loader = kept[loaders[0]]
        self._read_args = {k: loader[k] for k in _READ_KEYS if k in loader}
        kept[loaders[0]] = dict(type='LoadImageFromNDArray',
                                to_float32=loader.get('to_float32', False))
        with mmseg_scope():
            return Compose(kept)

    def _init_collate(self, cfg: Config | ConfigDict) -> Callable:
        """The test dataloader's ``collate_fn`` (default ``pseudo_collate``),
        looked up in mmengine's function registry, where collate functions
        are: mmengine's own lookup switches to the inferencer's scope, mmseg,
        which has no function registry, and warns so on every run."""
        collate = cfg.test_dataloader.get('collate_fn') or dict(type='pseudo_collate')
        name = collate['type'] if isinstance(collate, dict) else collate
        function = FUNCTIONS.get(name)
        if function is None:
            raise KeyError(f'test_dataloader.collate_fn: {name!r} is not a registered '
                           f'collate function (e.g. pseudo_collate, default_collate)')
        return function

    def _init_visualizer(self, cfg: Config | ConfigDict) -> Visualizer | None:
        if 'visualizer' in cfg:
            # the inferencer writes its pictures itself (out_dir): storage
            # backends are not used, and without a save_dir they warn
            cfg.visualizer = ConfigDict(cfg.visualizer, vis_backends=None)
            if cfg.visualizer.get('type') in ('SegLocalVisualizer', 'mmseg.SegLocalVisualizer'):
                cfg.visualizer.type = 'UncertaintyVisualizer'
        return super()._init_visualizer(cfg)

    def __call__(self, inputs: ImageInput | Iterable[ImageInput],
                 return_datasamples: bool = False, return_vis: bool = False,
                 **kwargs) -> dict | SegDataSample | list[SegDataSample]:
        """Run on ``inputs`` (see :func:`~mmseg_uncert.apis.inference_inputs.named_inputs`)
        and gather the results as ``MMSegInferencer`` does: data samples, or
        ``dict(predictions, uncertainty, visualization)``, one entry per image
        (the entry itself for a single image). Arguments as for
        :meth:`iter_results`."""
        results = list(self.iter_results(inputs, return_datasamples=return_datasamples,
                                         return_vis=return_vis, **kwargs))
        if return_datasamples:
            return results[0] if len(results) == 1 else results
        gathered = {key: [r.get(key) for r in results]
                    for key in ('predictions', 'uncertainty', 'visualization')}
        if not return_vis:
            gathered['visualization'] = []
        if len(results) == 1:
            gathered = {k: v[0] if v else v for k, v in gathered.items()}
        return gathered

    def iter_results(self,
                     inputs: ImageInput | Iterable[ImageInput],
                     return_datasamples: bool = False,
                     batch_size: int = 1,
                     return_vis: bool = False,
                     show: bool = False,
                     wait_time: int = 0,
                     out_dir: str = '',
                     img_out_dir: str = 'vis',
                     pred_out_dir: str = 'pred',
                     names: Sequence[str] | None = None,
                     **kwargs) -> Iterator[dict | SegDataSample]:
        """Each image's result, as soon as its batch is done.

        Args:
            inputs: an image path, a folder, a video, a BGR array, or a
                sequence of those.
            return_datasamples: yield the data samples themselves.
            batch_size: images per ``test_step``.
            return_vis: add the visualizer's picture (RGB) to each result.
            show: show each picture in a window.
            wait_time: seconds each shown picture stays.
            out_dir: where the files go ('' writes none);
                ``img_out_dir`` (pictures; '' draws none) and
                ``pred_out_dir`` (predictions and maps) are subfolders of it.
            names: one name per array input, for its files.
            **kwargs: ``opacity`` and ``with_labels`` for the visualizer.

        Yields:
            ``dict(name, predictions, uncertainty[, visualization])``: the
            (H, W) class indices, ``{map name: (H, W) float32}``, the
            picture; or the data sample (``return_datasamples``).
        """
        if batch_size < 1:
            raise ValueError(f'batch_size={batch_size}: give at least 1')
        _, _, visualize_kwargs, _ = self._dispatch_kwargs(**kwargs)
        pred_dir = osp.join(out_dir, pred_out_dir) if out_dir else ''
        img_dir = osp.join(out_dir, img_out_dir) if out_dir and img_out_dir else ''
        for folder in (pred_dir, img_dir):
            if folder:  # before any inference, not after the first batch
                check_out_dir(folder)
        batches = self._batches(named_inputs(inputs, names), batch_size)
        if self.show_progress:
            batches = track(batches, description='Inference')
        for batch in batches:
            data = self.collate_fn([self._prepare(img, path) for _, img, path in batch])
            preds = self.forward(data)
            pictures = self.visualize(
                [(name, _rgb(img)) for name, img, _ in batch], preds,
                return_vis=return_vis, show=show, wait_time=wait_time,
                img_out_dir=img_dir, **visualize_kwargs)
            yield from self.postprocess(
                preds, pictures, return_datasamples, pred_dir,
                names=[name for name, _, _ in batch])

    def _batches(self, items: Iterator[tuple[str | None, ImageInput]],
                 batch_size: int) -> Iterator[list[tuple[str, np.ndarray, str | None]]]:
        """Decoded images in lists of ``batch_size``: (name, BGR image,
        path or None); arrays without a name are numbered as mmseg numbers
        them."""
        batch = []
        for name, item in items:
            if name is None:
                name = str(self.num_pred_imgs + len(batch)).zfill(8)
            if isinstance(item, str):
                batch.append((name, self._decode(item), item))
            else:
                batch.append((name, item, None))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _decode(self, path: str) -> np.ndarray:
        return read_image(path, **self._read_args)

    def _prepare(self, img: np.ndarray, path: str | None) -> dict:
        """The test pipeline's output for one decoded image; the data sample
        keeps the image's path (mmseg's NDArray loader sets None)."""
        data = self.pipeline(dict(img=img))
        data['data_samples'].set_metainfo(dict(img_path=path))
        return data

    def visualize(self,
                  inputs: list[tuple[str, np.ndarray]],
                  preds: list[SegDataSample],
                  return_vis: bool = False,
                  show: bool = False,
                  wait_time: int = 0,
                  img_out_dir: str = '',
                  opacity: float = 0.8,
                  with_labels: bool | None = True) -> list[np.ndarray] | None:
        """The visualizer's picture of each (name, RGB image) and its
        prediction, written to ``img_out_dir/<name>.png`` where given."""
        if not show and img_out_dir == '' and not return_vis:
            return None
        if self.visualizer is None:
            raise ValueError('drawing needs a "visualizer" in the config, e.g. '
                             "visualizer = dict(type='UncertaintyVisualizer', "
                             "vis_backends=[dict(type='LocalVisBackend')], "
                             "name='visualizer')")
        meta = self.model.dataset_meta or {}
        classes, palette = meta.get('classes'), meta.get('palette')
        if classes and not palette:
            palette = default_palette(len(classes))
        self.visualizer.set_dataset_meta(classes, palette)
        self.visualizer.alpha = opacity
        pictures = []
        for (name, img), pred in zip(inputs, preds):
            out_file = osp.join(img_out_dir, f'{name}.png') if img_out_dir else None
            self.visualizer.add_datasample(
                name, img, pred, show=show, wait_time=wait_time, draw_gt=False,
                draw_pred=True, out_file=out_file, with_labels=with_labels)
            pictures.append(self.visualizer.get_image() if return_vis else None)
            self.num_visualized_imgs += 1
        return pictures

    def postprocess(self,
                    preds: list[SegDataSample],
                    visualization: list[np.ndarray] | None,
                    return_datasample: bool = False,
                    pred_out_dir: str = '',
                    names: Sequence[str] | None = None) -> list[dict | SegDataSample]:
        """One result per prediction (see :meth:`iter_results`); with
        ``pred_out_dir``, its files are written there."""
        results = []
        for i, pred in enumerate(preds):
            name = names[i] if names is not None else str(self.num_pred_imgs).zfill(8)
            maps = _uncertainty_maps(pred)
            labels = pred.pred_sem_seg.data[0].cpu().numpy() \
                if 'pred_sem_seg' in pred else None
            if pred_out_dir:
                _save(pred_out_dir, name, labels, maps, pred)
            self.num_pred_imgs += 1
            if return_datasample:
                results.append(pred)
                continue
            result = dict(name=name, uncertainty=maps,
                          predictions=labels if labels is not None
                          else pred.pred_depth_map.data[0].cpu().numpy())
            if visualization is not None and visualization[i] is not None:
                result['visualization'] = visualization[i]
            results.append(result)
        return results


def default_palette(num_classes: int) -> list[list[int]]:
    """Colours for classes that come without a palette: fixed (seeded) random
    ones, as mmseg's datasets make them."""
    rng = np.random.default_rng(42)
    return rng.integers(0, 256, size=(num_classes, 3)).tolist()


def _carries_weights(model_cfg: dict) -> bool:
    """Whether the model's parts name their own checkpoints (ensembles, MC
    dropout), so that it needs no weights of its own."""
    if is_training_wrapper(model_cfg.get('type')):
        return False
    with mmseg_scope():
        cls = MODELS.get(model_cfg.get('type', ''))
    return bool(getattr(cls, 'carries_weights', False))


def _rgb(img: np.ndarray) -> np.ndarray:
    """A decoded BGR (or grayscale) image as RGB, for the picture."""
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    return mmcv.bgr2rgb(img) if img.shape[2] == 3 else img[..., 2::-1]


def _uncertainty_maps(pred: SegDataSample) -> dict[str, np.ndarray]:
    if 'pred_uncertainty' not in pred:
        return {}
    maps = pred.pred_uncertainty
    return {name: maps.get(name)[0].detach().float().cpu().numpy()
            for name in map_names(maps)}


def _save(folder: str, name: str, labels: np.ndarray | None,
          maps: dict[str, np.ndarray], pred: SegDataSample) -> None:
    """``<name>_pred.png`` (or ``_pred.npy`` for a depth map) and
    ``<name>_<map>.npy`` in ``folder``."""
    stem = osp.join(folder, name)
    mmengine.mkdir_or_exist(osp.dirname(stem))
    if labels is not None:
        # 8-bit as mmseg writes it; 16-bit where a class index would not fit
        dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
        Image.fromarray(labels.astype(dtype)).save(f'{stem}_pred.png')
    elif 'pred_depth_map' in pred:
        np.save(f'{stem}_pred.npy', pred.pred_depth_map.data[0].cpu().numpy())
    for map_name, value in maps.items():
        np.save(f'{stem}_{map_name}.npy', value.astype(np.float32, copy=False))


"""mmseg's visualizer, drawing the uncertainty maps beside the prediction."""
from __future__ import annotations

from typing import Mapping, Sequence

import mmcv
import numpy as np
import torch
from mmengine.dist import master_only
from mmengine.structures import PixelData

from mmseg.registry import VISUALIZERS
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

from ..models.uncertainty import UNCERTAINTY_NAMES
from .uncertainty_panels import Panel, PanelsPicture, render_panels


@VISUALIZERS.register_module()
class UncertaintyVisualizer(SegLocalVisualizer):
    """One picture per image: image | prediction | ground truth | each map.

    A drop-in for mmseg's ``SegLocalVisualizer`` (it is one): set it in a
    config and ``tools/test.py --show-dir``, ``SegVisualizationHook`` during
    validation and ``MMSegInferencer`` draw the image, the prediction and,
    where the data sample has them, the ground truth (``gt_sem_seg``) and
    every map of ``pred_uncertainty``, side by side, with the panels drawn by
    :func:`~mmseg_uncert.visualization.render_panels` (the same renderer as
    ``tools/visualize_uncertainty.py``). Labels are coloured by the
    palette of ``dataset_meta`` (the image is a panel of its own, so ``alpha``
    is not used); each map has its own colour scale, from 0 to its 99.5th
    percentile, a colour bar and its name as title, unless ``scales`` puts
    maps of one quantity on one scale. A sample without
    ``pred_uncertainty`` gives image | prediction (| ground truth), so the
    visualizer serves any model. Depth maps (``pred_depth_map``,
    ``gt_depth_map``) are drawn as maps on one shared scale.

    Args:
        name, image, vis_backends, save_dir, classes, palette, dataset_name,
            alpha: as for ``SegLocalVisualizer``.
        maps: the ``pred_uncertainty`` maps to draw, in this order; default
            every map the sample has (see :func:`map_names`).
        scales: map name → scale name; maps with one scale name share their
            colour scale, e.g. ``dict(total='nats', aleatoric='nats',
            epistemic='nats')`` for the entropies. Default: each its own.
        columns: panels per row; default all in one row.
        panel_width: width of a panel in inches (80 dots per inch).
    """

    def __init__(self,
                 name: str = 'visualizer',
                 image: np.ndarray | None = None,
                 vis_backends: list[dict] | None = None,
                 save_dir: str | None = None,
                 classes: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None,
                 dataset_name: str | None = None,
                 alpha: float = 0.8,
                 maps: Sequence[str] | None = None,
                 scales: Mapping[str, str] | None = None,
                 columns: int | None = None,
                 panel_width: float = 4.0,
                 **kwargs) -> None:
        # SegLocalVisualizer.__init__ passes (palette, classes) to
        # set_dataset_meta(classes, palette), swapping them: set them here
        super().__init__(name, image, vis_backends, save_dir, None, None,
                         dataset_name, alpha, **kwargs)
        self.set_dataset_meta(classes, palette, dataset_name)
        if columns is not None and columns < 1:
            raise ValueError(f'UncertaintyVisualizer: columns={columns}; give '
                             f'at least 1, or None for one row')
        if panel_width <= 0:
            raise ValueError(f'UncertaintyVisualizer: panel_width={panel_width} '
                             f'inches; give a positive width')
        self.maps = list(maps) if maps is not None else None
        self.scales = dict(scales or {})
        self.columns = columns
        self.panel_width = panel_width

    def panels(self, image: np.ndarray, data_sample: SegDataSample | None = None,
               draw_gt: bool = True, draw_pred: bool = True) -> list[Panel]:
        """The panels of one picture, in the order they are drawn."""
        panels = [Panel('image', image, 'image')]
        if data_sample is None:
            return panels
        if draw_pred and 'pred_sem_seg' in data_sample:
            panels.append(Panel('prediction', _plane(data_sample.pred_sem_seg.data),
                                'label'))
        if draw_gt and 'gt_sem_seg' in data_sample:
            panels.append(Panel('ground truth', _plane(data_sample.gt_sem_seg.data),
                                'label'))
        if draw_pred and 'pred_uncertainty' in data_sample:
            for name, value in self._uncertainty(data_sample.pred_uncertainty).items():
                panels.append(Panel(name, value, 'map', scale=self.scales.get(name)))
        for key, title, wanted in (('pred_depth_map', 'predicted depth', draw_pred),
                                   ('gt_depth_map', 'ground-truth depth', draw_gt)):
            if wanted and key in data_sample:
                panels.append(Panel(title, _plane(data_sample.get(key).data).astype(
                    np.float32), 'map', scale='depth'))
        return panels

    def render(self, name: str, image: np.ndarray,
               data_sample: SegDataSample | None = None, draw_gt: bool = True,
               draw_pred: bool = True, with_labels: bool = True) -> PanelsPicture:
        """The picture of one sample (:meth:`panels`), titled ``name``, and
        where each panel lies in it."""
        panels = self.panels(image, data_sample, draw_gt, draw_pred)
        classes = self.dataset_meta.get('classes') if with_labels else None
        return render_panels(
            panels, self.dataset_meta.get('palette'), title=name,
            columns=self.columns or len(panels), classes=classes,
            panel_width=self.panel_width)

    @master_only
    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample: SegDataSample | None = None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: str | None = None,
                       step: int = 0,
                       with_labels: bool = True) -> None:
        """Draw one sample (``image`` RGB) and show it, write it to
        ``out_file``, or else give it to every vis backend (``LocalVisBackend``
        writes ``save_dir/vis_data/vis_image/{name}_{step}.png``), as
        ``SegLocalVisualizer.add_datasample`` does. ``with_labels`` names the
        classes on the label panels. :meth:`get_image` returns the picture."""
        drawn = self.render(name, image, data_sample, draw_gt, draw_pred,
                            with_labels).image
        self.set_image(drawn)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file)
        else:
            self.add_image(name, drawn, step)

    def _uncertainty(self, maps: PixelData) -> dict[str, np.ndarray]:
        available = map_names(maps)
        names = self.maps if self.maps is not None else available
        missing = [n for n in names if n not in available]
        if missing:
            raise KeyError(f'UncertaintyVisualizer: maps={self.maps} asks for '
                           f'{missing}, but the prediction has {available}; '
                           f'set maps to some of those, or None for all')
        return {n: _plane(maps.get(n)).astype(np.float32) for n in names}


def map_names(maps: PixelData) -> list[str]:
    """The names of a sample's ``pred_uncertainty`` maps in a fixed order
    (a PixelData keeps none): the package's own (total, aleatoric,
    epistemic, std, variation_ratio) first, then the others by name."""
    names = set(maps.keys())
    return ([n for n in UNCERTAINTY_NAMES if n in names]
            + sorted(names - set(UNCERTAINTY_NAMES)))


def _plane(data: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (1, H, W) or (H, W) field of a data sample as an (H, W) array."""
    if isinstance(data, torch.Tensor):
        data = data.detach().float().cpu().numpy() if data.is_floating_point() \
            else data.detach().cpu().numpy()
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ValueError(f'a (1, H, W) or (H, W) map was expected, got shape '
                         f'{tuple(data.shape)}')
    return data

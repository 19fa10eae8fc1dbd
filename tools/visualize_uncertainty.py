"""Side-by-side uncertainty pictures for every image of a folder.

    python tools/visualize_uncertainty.py CONFIG CHECKPOINT IMAGE_DIR --out-dir DIR
        [--ann-dir LABEL_DIR] [--reference CONFIG [CHECKPOINT]]
        [--maps std] [--reference-maps epistemic aleatoric] [--limit N]

For each image (files under IMAGE_DIR, recursively, that end with the
config's dataset ``img_suffix``) one PNG in DIR, ``<stem>_uncertainty.png``,
panels left to right:
the image; the ground truth; the model's prediction; its uncertainty maps
(``--maps``, default all it gives); the reference model's maps
(``--reference-maps``, default its epistemic and aleatoric maps, e.g. of the
teacher ensemble a student learned from); the true aleatoric map (label
entropy) and the OOD mask. The ground truth and the two true maps come from
``--ann-dir`` in the Cityscapes layout (``<stem><seg_map_suffix>``,
``<stem>_gtFine_aleatoric.png``, ``<stem>_gtFine_ood.png``) and are left out
where absent. CHECKPOINT may be ``none`` for an ensemble or MC-dropout config
(its members name their checkpoints); a distillation or ProDA config draws
the network it trains. Maps of one name (the model's and the reference's
``epistemic``; the aleatoric maps and the true label entropy, all in nats)
share one colour scale, so that they compare by eye; each other map has its
own. Images go through the model config's test pipeline
(without its annotation loaders); predictions and maps are at the image's
size.
"""
from __future__ import annotations

import argparse
import inspect
import os
import os.path as osp

import mmcv
import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

import mmseg_uncert  # noqa: F401  (registers the components)
from mmseg_uncert.apis import init_uncertainty_model
from mmseg_uncert.datasets.annotation_noise import decode_entropy
from mmseg_uncert.datasets.synthetic_streets import FILE_SUFFIXES
from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.visualization import Panel, draw_panels

ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadUncertaintyAnnotations')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="checkpoint, or 'none'")
    parser.add_argument('image_dir')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--ann-dir', help='labels (and true uncertainty maps) '
                        'in the Cityscapes layout')
    parser.add_argument('--reference', nargs='+', metavar='CONFIG [CHECKPOINT]',
                        help='a second model whose maps are drawn too')
    parser.add_argument('--maps', nargs='+', help='the model\'s maps to draw')
    parser.add_argument('--reference-maps', nargs='+',
                        help='the reference\'s maps to draw')
    parser.add_argument('--name', default='model', help='the model in titles')
    parser.add_argument('--reference-name', default='reference')
    parser.add_argument('--limit', type=int, help='the first N images only')
    args = parser.parse_args()
    for path, what in ((args.config, 'config'), (args.image_dir, 'image folder')):
        if not osp.exists(path):
            parser.error(f'{what} {path} does not exist')
    if args.checkpoint != 'none' and not osp.isfile(args.checkpoint):
        parser.error(f"checkpoint {args.checkpoint} does not exist (give 'none' "
                     f'for an ensemble config)')
    if args.ann_dir and not osp.isdir(args.ann_dir):
        parser.error(f'--ann-dir {args.ann_dir} does not exist')
    if args.reference and len(args.reference) > 2:
        parser.error('--reference takes CONFIG [CHECKPOINT]')
    return args


def dataset_suffixes(cfg: Config) -> tuple[str, str]:
    """(img_suffix, seg_map_suffix) of the config's test dataset, from its
    config or the dataset class's defaults."""
    from mmseg.registry import DATASETS
    dataset = cfg.test_dataloader.dataset
    with mmseg_scope():
        cls = DATASETS.get(dataset.type)
    defaults = {}
    for klass in reversed(cls.__mro__):  # a subclass's defaults win
        if '__init__' in vars(klass):
            defaults.update({k: v.default for k, v in inspect.signature(
                klass.__init__).parameters.items()
                if v.default is not inspect.Parameter.empty})
    return (dataset.get('img_suffix', defaults.get('img_suffix', '.jpg')),
            dataset.get('seg_map_suffix', defaults.get('seg_map_suffix', '.png')))


def find_images(image_dir: str, suffix: str) -> list[str]:
    if osp.isfile(image_dir):
        return [image_dir]
    found = sorted(osp.join(root, name) for root, _, names in os.walk(image_dir)
                   for name in names if name.endswith(suffix))
    if not found:
        raise SystemExit(f'no image ending with {suffix!r} (the config\'s '
                         f'img_suffix) under {image_dir}')
    return found


def inference_pipeline(cfg: Config) -> Compose:
    """The test pipeline without its annotation loaders."""
    pipeline = cfg.get('test_pipeline') or cfg.test_dataloader.dataset.pipeline
    with mmseg_scope():
        return Compose([t for t in pipeline if t['type'] not in ANNOTATION_LOADERS])


def annotations(img_path: str, image_dir: str, ann_dir: str | None,
                img_suffix: str, seg_map_suffix: str) -> dict[str, np.ndarray]:
    """The label map, true aleatoric map and OOD mask of an image, those
    that exist under ``ann_dir``."""
    if ann_dir is None:
        return {}
    rel = osp.relpath(img_path, image_dir) if osp.isdir(image_dir) else osp.basename(img_path)
    stem = osp.join(ann_dir, rel[:-len(img_suffix)])
    found = {}
    for key, suffix in (('label', seg_map_suffix),
                        ('aleatoric', FILE_SUFFIXES['aleatoric']),
                        ('ood', FILE_SUFFIXES['ood'])):
        path = stem + suffix
        if osp.isfile(path):
            found[key] = mmcv.imread(path, flag='unchanged', backend='cv2')
    if 'aleatoric' in found:
        found['aleatoric'] = decode_entropy(found['aleatoric'])
    return found


def uncertainty_maps(sample, names: list[str] | None, default: tuple[str, ...],
                     who: str) -> dict[str, np.ndarray]:
    maps = sample.get('pred_uncertainty')
    available = sorted(maps.keys()) if maps is not None else []
    if names is None:
        names = [n for n in default if n in available] or available
    missing = [n for n in names if n not in available]
    if missing:
        raise SystemExit(f'{who} gives no {missing} map; it gives {available}')
    return {n: maps.get(n).squeeze(0).float().numpy() for n in names}


def main() -> None:
    args = parse_args()
    model = init_uncertainty_model(
        args.config, None if args.checkpoint == 'none' else args.checkpoint)
    reference = None
    if args.reference:
        reference = init_uncertainty_model(
            args.reference[0], args.reference[1] if len(args.reference) > 1 else None)
    cfg = model.cfg
    img_suffix, seg_map_suffix = dataset_suffixes(cfg)
    pipeline = inference_pipeline(cfg)
    palette = (model.dataset_meta or {}).get('palette')
    images = find_images(args.image_dir, img_suffix)[:args.limit]
    os.makedirs(args.out_dir, exist_ok=True)
    for img_path in images:
        batch = pseudo_collate([pipeline(dict(img_path=img_path))])
        out = model.test_step(batch)[0]
        truth = annotations(img_path, args.image_dir, args.ann_dir, img_suffix,
                            seg_map_suffix)
        panels = [Panel('image', mmcv.imread(img_path, channel_order='rgb'), 'image')]
        if 'label' in truth:
            panels.append(Panel('ground truth', truth['label'], 'label'))
        panels.append(Panel(f'{args.name} prediction',
                            out.pred_sem_seg.data[0].numpy(), 'label'))
        for name, value in uncertainty_maps(out, args.maps, (), args.name).items():
            panels.append(Panel(f'{args.name} {name}', value, 'map', scale=name))
        if reference is not None:
            ref = reference.test_step(batch)[0]
            for name, value in uncertainty_maps(
                    ref, args.reference_maps, ('epistemic', 'aleatoric'),
                    args.reference_name).items():
                panels.append(Panel(f'{args.reference_name} {name}', value, 'map',
                                    scale=name))
        if 'aleatoric' in truth:
            # label entropy in nats, the quantity the aleatoric maps estimate
            panels.append(Panel('true aleatoric (label entropy)',
                                truth['aleatoric'], 'map', scale='aleatoric'))
        if 'ood' in truth:
            panels.append(Panel('OOD mask', (truth['ood'] > 0).astype(np.uint8),
                                'mask'))
        base = osp.basename(img_path)
        stem = base[:-len(img_suffix)] if base.endswith(img_suffix) else osp.splitext(base)[0]
        out_path = osp.join(args.out_dir, f'{stem}_uncertainty.png')
        draw_panels(panels, out_path, palette=palette, title=base)
        print(f'{img_path} -> {out_path}', flush=True)
    print(f'{len(images)} pictures written to {args.out_dir}')


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()

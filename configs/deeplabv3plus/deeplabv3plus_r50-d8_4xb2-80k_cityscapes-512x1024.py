# mmseg's DeepLabV3+ R-50 on Cityscapes (4 GPUs x 2 images, 80k iterations)
# with this package loaded: one ensemble member, for
#   python tools/train_ensemble.py \
#       configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py \
#       --members 3 --launcher pytorch
# (under torchrun with 4 processes). Data in data/cityscapes/ (see mmseg's
# dataset preparation); ImageNet weights of the backbone are downloaded by
# mmseg's config at the first run.
_base_ = ['mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['mmseg_uncert'], allow_failed_imports=False)
runner_type = 'CompatRunner'
# as configs/_base_/default_runtime.py (this config builds on mmseg's
# runtime): pictures with the uncertainty maps (--show-dir, MMSegInferencer)
# and `--tta` keeping the maps over the augmented views
vis_backends = [dict(type='LocalVisBackend')]
# 4 panels a row: image, prediction, ground truth, then the maps below
visualizer = dict(type='UncertaintyVisualizer', vis_backends=vis_backends,
                  name='visualizer', columns=4)
tta_model = dict(type='UncertaintyTTAModel')

# mmseg's runtime plus this package: its components are registered by
# custom_imports, and CompatRunner also runs `--launcher pytorch` on CPU (gloo).
_base_ = ['mmseg::_base_/default_runtime.py']

custom_imports = dict(imports=['mmseg_uncert'], allow_failed_imports=False)
runner_type = 'CompatRunner'
# `tools/test.py --tta` wraps the model in this (mmseg's runtime sets
# SegTTAModel, which keeps only pred_sem_seg): the averaged probabilities and
# the total / aleatoric / epistemic / std / variation_ratio maps over the views
# of the dataset config's `tta_pipeline`. Set here, next to the model-side
# runtime choices, so every config of the package gets it whatever its data.
tta_model = dict(type='UncertaintyTTAModel')
# Pictures with the uncertainty maps beside the prediction (tools/test.py
# --show-dir, SegVisualizationHook, MMSegInferencer): a SegLocalVisualizer
vis_backends = [dict(type='LocalVisBackend')]
# 4 panels a row: image, prediction, ground truth, then the maps below
visualizer = dict(type='UncertaintyVisualizer', vis_backends=vis_backends,
                  name='visualizer', columns=4)

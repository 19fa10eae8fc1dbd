# mmseg's runtime plus this package: its components are registered by
# custom_imports, and CompatRunner also runs `--launcher pytorch` on CPU (gloo).
_base_ = ['mmseg::_base_/default_runtime.py']

custom_imports = dict(imports=['mmseg_uncert'], allow_failed_imports=False)
runner_type = 'CompatRunner'

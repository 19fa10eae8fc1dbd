# The smallest end-to-end segmentor on the embedded synthetic benchmark:
# trains from random initialisation on 2 CPU cores.
_base_ = [
    '../_base_/models/fcn_mobilenet-v3-s.py',
    '../_base_/datasets/synthetic_streets.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_cpu_2k.py',
]
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
crop_size = (128, 256)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)

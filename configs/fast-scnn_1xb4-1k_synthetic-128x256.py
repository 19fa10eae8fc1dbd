# The teacher member (and the student's architecture) of the main job on the
# embedded synthetic benchmark: Fast-SCNN from random initialisation, 1000
# iterations of batch 4 on 128x256 crops, on 2 CPU cores.
_base_ = [
    './_base_/models/fast-scnn.py',
    './_base_/datasets/synthetic_streets.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_cpu_2k.py',
]
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
crop_size = (128, 256)
data_preprocessor = dict(size=crop_size)
# ENet's class weights (Paszke et al., 2016): w_c = 1 / ln(1.02 + f_c), f_c the
# share of class c among the labelled pixels of train (first 300 images),
# normalised to mean 1 over the 10 classes the scenes contain (the others never
# occur, weight 1). Without them the thin classes (pole, traffic sign) are
# still unlearnt after 1000 iterations (benchmarks/member_architectures.py).
# ClassWeightedCrossEntropyLoss: mmseg 1.2.2's CrossEntropyLoss fails with
# class weights on pixels labelled 255.
class_weight = [0.299, 0.421, 0.239, 1.0, 1.0, 2.239, 1.0, 2.422, 1.169, 0.24,
                0.28, 1.859, 1.0, 0.832, 1.0, 1.0, 1.0, 1.0, 1.0]
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(loss_decode=dict(
        _delete_=True, type='ClassWeightedCrossEntropyLoss',
        class_weight=class_weight)))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=100, by_epoch=False),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=100, end=1000,
         by_epoch=False),
]
train_cfg = dict(max_iters=1000, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=250))

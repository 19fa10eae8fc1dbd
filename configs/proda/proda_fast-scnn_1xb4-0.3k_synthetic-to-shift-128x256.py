# ProDA stage 1 on the embedded benchmark: labelled source = the `train`
# scenes, unlabelled target = `shift_train` (the same kind of scenes in fog,
# at night, with a colour cast or blur), validated on `shift_val`. The network
# is the main job's member (Fast-SCNN, ENet class weights on the source).
#
# Needs the warm-up (source-only) model, trained from the repository root by
#   python tools/train.py configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py
# which writes the checkpoint named below; it initialises the model
# (load_from) and gives the fixed soft pseudo-labels (pseudo_labeller).
_base_ = [
    '../_base_/models/fast-scnn.py',
    '../_base_/datasets/synthetic_streets_shift.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_cpu_2k.py',
]
warmup_config = 'configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py'
warmup_checkpoint = 'work_dirs/fast-scnn_1xb4-1k_synthetic-128x256/iter_1000.pth'
load_from = warmup_checkpoint
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
crop_size = (128, 256)
# Fast-SCNN's head with its own cross-entropy, before the class weights the
# source loss gets below: the distillation stage's student learns with it
plain_decode_head = {{_base_.model.decode_head}}
model = dict(
    type='ProDASegmentor',
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(loss_decode=dict(
        _delete_=True, type='ClassWeightedCrossEntropyLoss',
        class_weight={{_base_.class_weight}})),
    pseudo_labeller=dict(config=warmup_config, checkpoint=warmup_checkpoint),
    target_loss=dict(type='SymmetricCrossEntropyLoss', alpha=0.1, beta=1.0),
    rectify=True,             # prototypical pseudo-label denoising
    temperature=1.0,          # τ of the prototype softmax
    # ProDA's rule: every pixel's rectified pseudo-label (no threshold)
    confidence_threshold=0.0,
    # γ1 of target structure learning, ProDA's: the KL averaged over pixels
    # and classes, between the momentum network's prototype assignments on
    # the weak view and the student's on the strong view (RandAugment's
    # geometric operations and a cut-out)
    structure_weight=10.0,
    regulariser_weight=0.1,   # γ2
    # SCE and the regulariser on the strong view, the pseudo-labels of the
    # weak view carried there (ProDA: on the weak view). On this benchmark
    # self-training learns more from the strong view
    # (benchmarks/domain_adaptation.py, docs/benchmarks.md)
    pseudo_label_view='strong',
    strong_geometric=True)
# The rates as half-lives in iterations, relative to the 300-iteration stage:
# the momentum network moves 10 half-lives, the prototypes 4 (ProDA's
# m = 0.999 and 1e-4 per image are half-lives of 693 and 1733 iterations
# of its schedule of tens of thousands)
stage_iters = 300
custom_hooks = [dict(type='PrototypeHook', momentum_half_life=stage_iters / 10,
                     prototype_half_life=stage_iters / 4, min_pixels=10,
                     init_batches=25)]
source_dataset = {{_base_.train_dataloader.dataset}}
train_dataloader = dict(
    dataset=dict(_delete_=True, type='SourceTargetDataset',
                 source=source_dataset,
                 target={{_base_.shift_train_dataset}}))
# fine-tuning from the warm-up model: a lower rate, no warm-up ramp
# the frozen warm-up model and momentum network are left out of the optimizer
optim_wrapper = dict(constructor='TrainableOptimWrapperConstructor',
                     optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=stage_iters,
         by_epoch=False),
]
train_cfg = dict(max_iters=stage_iters, val_interval=stage_iters)
default_hooks = dict(checkpoint=dict(interval=100))

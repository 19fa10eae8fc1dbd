# CGNet (Wu et al., "CGNet: A Light-weight Context Guided Network for Semantic
# Segmentation", 2018; mmseg's M3N21 variant) with the member recipe of
# configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py: same data, crops, optimiser,
# schedule and ENet class weights. The most accurate architecture of
# benchmarks/member_architectures.py, at 2.9x Fast-SCNN's cost per training
# iteration; benchmarks/member_diversity.py uses it as the odd member of a
# mixed-architecture ensemble.
_base_ = ['../fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py']
# mmseg's CGNet configs use BN with eps 1e-3
cgnet_norm_cfg = dict(type='BN', requires_grad=True, eps=1e-3)
model = dict(
    backbone=dict(
        _delete_=True,
        type='CGNet',
        in_channels=3,
        num_channels=(32, 64, 128),
        num_blocks=(3, 21),
        dilations=(2, 4),
        reductions=(8, 16),
        norm_cfg=cgnet_norm_cfg),
    decode_head=dict(
        type='FCNHead',
        in_channels=256,
        in_index=2,
        channels=256,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0,
        norm_cfg=cgnet_norm_cfg))

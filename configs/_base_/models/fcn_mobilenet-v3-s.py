# A CPU-sized segmentor: MobileNetV3-small (dilated, output stride 8) with a
# one-conv FCN head. Plain BN: SyncBN needs CUDA, and mmengine turns SyncBN
# back into BN for single-process runs anyway.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='MobileNetV3',
        arch='small',
        out_indices=(12, ),
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='FCNHead',
        in_channels=576,
        in_index=0,
        channels=64,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

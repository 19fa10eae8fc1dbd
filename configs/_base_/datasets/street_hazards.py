# StreetHazards test set (streethazards_test.tar): 13 known classes, the
# anomaly class ignored in gt_sem_seg and marked in gt_ood. mIoU over the known
# classes plus StreetHazards' per-image AUROC, AUPR and FPR95, averaged over
# images. Compose it with a model trained on StreetHazards' 13 classes and the
# runtime (docs/own_data.md, section 11).
dataset_type = 'StreetHazardsDataset'
data_root = 'data/streethazards/'
img_scale = (1280, 720)  # (width, height) of the StreetHazards images
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # annotations are loaded after Resize: metrics compare at label size
    dict(type='LoadAnnotations'),
    dict(type='LoadUncertaintyAnnotations', keys=('ood', )),
    dict(type='PackSegUncertaintyInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='AnomalyMetric', protocol='streethazards',
         scores=['max_prob', 'entropy']),
]
val_evaluator = test_evaluator

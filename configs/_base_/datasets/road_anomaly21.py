# RoadAnomaly21, the anomaly track of SegmentMeIfYouCan: the public
# validation frames of the benchmark's dataset_AnomalyTrack archive, scored by
# the benchmark's pixel (AUPRC, FPR95) and component (sIoU, PPV, mean F1)
# metrics with its anomaly-track component sizes. Compose it with a model and
# the runtime (docs/own_data.md, section 11).
dataset_type = 'SegmentMeIfYouCanDataset'
data_root = 'data/dataset_AnomalyTrack/'
img_scale = (2048, 1024)  # (width, height): the Cityscapes scale
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # the mask is loaded after Resize: metrics compare at the mask's size
    dict(type='LoadUncertaintyAnnotations', keys=('ood', )),
    dict(type='PackSegUncertaintyInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, img_suffix='.jpg',
                 pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(type='AnomalyMetric', protocol='smiyc',
                      scores=['max_prob', 'entropy'],
                      min_gt_component_size=100, min_pred_component_size=500)
val_evaluator = test_evaluator

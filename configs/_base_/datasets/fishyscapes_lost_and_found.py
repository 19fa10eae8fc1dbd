# Fishyscapes Lost & Found validation: Fishyscapes' 100 anomaly masks
# (fishyscapes_lostandfound.zip) over the Lost and Found images, scored by
# Fishyscapes' pixel metrics (AP, AUROC, FPR95) plus SegmentMeIfYouCan's
# component metrics with its anomaly-track sizes (the benchmark scores this
# set too). For SegmentMeIfYouCan's AUPRC instead of AP, set
# test_evaluator.protocol='smiyc'. Compose it with a model and the runtime
# (docs/own_data.md, section 11).
dataset_type = 'FishyscapesLostAndFoundDataset'
data_root = 'data/fishyscapes_lost_and_found/'
img_scale = (2048, 1024)  # (width, height): the Lost and Found images' size
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
    dataset=dict(type=dataset_type, data_root=data_root,
                 pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(type='AnomalyMetric', protocol='fishyscapes',
                      scores=['max_prob', 'entropy'],
                      min_gt_component_size=100, min_pred_component_size=500)
val_evaluator = test_evaluator

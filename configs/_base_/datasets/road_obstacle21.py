# RoadObstacle21, the obstacle track of SegmentMeIfYouCan: the benchmark's
# ObstacleTrack-validation split (frames validation_*, without the ten it
# leaves out) of its dataset_ObstacleTrack archive (.webp images), scored by
# the benchmark's pixel and component metrics with its obstacle-track
# component sizes. Compose it with a model and the runtime (docs/own_data.md,
# section 11).
dataset_type = 'SegmentMeIfYouCanDataset'
data_root = 'data/dataset_ObstacleTrack/'
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
    dataset=dict(
        type=dataset_type, data_root=data_root, img_suffix='.webp',
        frame_prefix='validation',
        # as the benchmark's ObstacleTrack-validation configuration
        exclude_prefixes=['validation_19', 'validation_21', 'validation_22',
                          'validation_23', 'validation_24', 'validation_25',
                          'validation_26', 'validation_27', 'validation_28',
                          'validation_29'],
        pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(type='AnomalyMetric', protocol='smiyc',
                      scores=['max_prob', 'entropy'],
                      min_gt_component_size=10, min_pred_component_size=50)
val_evaluator = test_evaluator

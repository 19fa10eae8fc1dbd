# The embedded synthetic street-scene benchmark (tools/make_synthetic.py), in
# the Cityscapes layout and with Cityscapes' 19 train ids. Val/test samples
# also carry the true aleatoric map (gt_aleatoric) and OOD mask (gt_ood).
dataset_type = 'SyntheticStreetsDataset'
data_root = 'data/synthetic_streets/'
img_scale = (512, 256)  # (width, height) of the generated images
crop_size = (128, 256)  # (height, width)
# ENet's class weights (Paszke et al., 2016): w_c = 1 / ln(1.02 + f_c), f_c the
# share of class c among the labelled pixels of train (first 300 images),
# normalised to mean 1 over the 10 classes the scenes contain (the others never
# occur, weight 1); for losses that weight classes
class_weight = [0.299, 0.421, 0.239, 1.0, 1.0, 2.239, 1.0, 2.422, 1.169, 0.24,
                0.28, 1.859, 1.0, 0.832, 1.0, 1.0, 1.0, 1.0, 1.0]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # annotations are loaded after Resize: metrics compare at label size
    dict(type='LoadAnnotations'),
    dict(type='LoadUncertaintyAnnotations'),
    dict(type='PackSegUncertaintyInputs'),
]
img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[
             [dict(type='Resize', scale_factor=r, keep_ratio=True)
              for r in img_ratios],
             [dict(type='RandomFlip', prob=0., direction='horizontal'),
              dict(type='RandomFlip', prob=1., direction='horizontal')],
             [dict(type='LoadAnnotations')],
             [dict(type='LoadUncertaintyAnnotations')],
             [dict(type='PackSegUncertaintyInputs')],
         ]),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/train',
                         seg_map_path='gtFine/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# mIoU plus calibration, misclassification, OOD and aleatoric-region metrics
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric', scores=['max_prob', 'entropy']),
]
test_evaluator = val_evaluator

# Test on the OOD split: street scenes with animals and debris never seen in
# training, labelled 255 and marked in gt_ood.
_base_ = ['./synthetic_streets.py']
val_dataloader = dict(
    dataset=dict(data_prefix=dict(img_path='leftImg8bit/ood',
                                  seg_map_path='gtFine/ood')))
test_dataloader = val_dataloader

"""Universal segmentation (semantic, instance and panoptic with one Mask2Former / OneFormer model)."""

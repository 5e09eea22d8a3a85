"""Semantic segmentation: a SegFormer head on a ViT-Adapter or simple-pyramid neck over any backbone."""

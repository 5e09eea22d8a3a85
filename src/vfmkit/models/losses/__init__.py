"""Losses and assignment shared by the set-prediction heads (detection, universal segmentation) and other tasks."""

"""Standard metric tools shared by the tasks (COCO evaluation, panoptic quality, dense confusion meters); no task
code."""

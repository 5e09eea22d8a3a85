"""Standard metric tools shared by the tasks (COCO evaluation, panoptic quality, dense confusion meters).

No task code: the tasks import these, never the other way round.
"""

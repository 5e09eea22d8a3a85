"""Object detection: DETR heads (RT-DETR / DINO presets) on any vfmkit backbone, COCO and YOLO data."""

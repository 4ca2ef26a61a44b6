"""Evaluation: a checkpoint, a detections file or a reference kind evaluated into metrics on disk (evaluate),
COCO scoring of detections (scoring: AP, subsets, classes), the COCOeval back-ends behind it (cocoeval:
pycocotools | faster-coco-eval), Boundary IoU (boundary), and masks built from the ground truth (reference_masks)."""

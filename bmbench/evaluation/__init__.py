"""Evaluation: inference to COCO detections (evaluate), COCOeval scoring (scoring), masks built from the ground
truth (references)."""

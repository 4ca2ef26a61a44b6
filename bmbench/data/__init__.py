"""Datasets: the procedurally generated shapes dataset and a COCO-format reader."""

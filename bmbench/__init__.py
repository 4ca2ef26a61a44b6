"""bmbench: benchmark and ablate instance-segmentation mask heads (BlendMask, YOLACT, CenterMask, Mask R-CNN)."""

__version__ = "0.4.0"

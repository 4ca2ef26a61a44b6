"""Mask heads of the built-in families, each split into bottom / top / merge stages (see base.py).

CondInst (condinst.py) is imported from its own module, never here: it imports the losses for its dice, and the
losses import this package's base, so importing it here would make a cycle.
"""

from bmbench.models.heads.base import BasisModule, MaskHead
from bmbench.models.heads.blendmask import BlendMaskHead, blend, build_blendmask_head
from bmbench.models.heads.centermask import CenterMaskHead, build_centermask_head, shape_times_saliency
from bmbench.models.heads.maskrcnn import MaskRCNNConvUpsampleHead, build_maskrcnn_head
from bmbench.models.heads.yolact import YolactHead, assemble, build_yolact_head

__all__ = [
    "BasisModule",
    "BlendMaskHead",
    "CenterMaskHead",
    "MaskHead",
    "MaskRCNNConvUpsampleHead",
    "YolactHead",
    "assemble",
    "blend",
    "build_blendmask_head",
    "build_centermask_head",
    "build_maskrcnn_head",
    "build_yolact_head",
    "shape_times_saliency",
]

"""Models: the ViT-MoE backbone, per-dataset heads, the keypoint-embedding module, prototypes."""

#: Keypoint heads a model can have (``model.head``); the first is the default, whose evaluation rows
#: carry no suffix. Kept here, free of torch, so that evaluation row names and Kedro nodes share it.
HEADS: tuple[str, ...] = ("heatmap", "sar")
DEFAULT_HEAD = HEADS[0]

"""Models: the ViT-MoE backbone, per-dataset heads, the keypoint-embedding module, prototypes."""

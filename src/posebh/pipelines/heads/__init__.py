"""``heads``: the ViTPose++ baseline trained again with the other keypoint head (SAR or heatmap)."""

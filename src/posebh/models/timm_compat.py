"""Import timm with the CPU torch wheel.

The only torchvision release built for torch 2.13 (0.28.0) is a CUDA build whose compiled ops fail
to load on a CPU-only torch; torchvision tolerates that except for registering fake kernels of its
``nms``/``qnms`` ops, which needs their schemas. Defining the two schemas before the import lets
torchvision (and so timm) import; only torchvision's C++ ops stay unavailable, and posebh uses none.
On a machine with a matching CUDA torchvision the first import simply succeeds and nothing is done.
"""

from __future__ import annotations

import sys

_LIBRARY = None


def import_timm():
    """Return the ``timm`` module, defining torchvision's op schemas first if needed."""
    global _LIBRARY
    try:
        import torchvision  # noqa: F401
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        import torch

        if _LIBRARY is None:
            _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
            _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401
    import timm

    return timm

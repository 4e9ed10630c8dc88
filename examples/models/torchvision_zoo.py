"""ResNet-18 from torchvision's own model code, random weights, 32x32 images:

    hal bringup examples/models/torchvision_zoo.py:resnet18 --backend cpu_sim --device h100-sxm

torchvision's only wheel for torch 2.13 on the package index (0.28.0) is the CUDA
build: its C extension needs libc10_cuda.so and does not load on the CPU build of
torch. The extension is optional to torchvision itself (it catches the load failure),
but the package's `__init__` then registers fake kernels for the extension's ops
(torchvision::nms, roi_align, ...) and that raises "operator does not exist".
`import_models()` therefore imports `torchvision.models` without running the package
`__init__`: the subpackages are torchvision's installed files, unchanged; nothing of
torchvision is copied here. The models do not use the extension's ops (detection
models and torchvision.ops would, at run time).

Needs torchvision 0.28.0 installed (`pip install --no-deps torchvision==0.28.0`); `ZOO`
lists the models by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from typing import Any

import torch


def import_models() -> Any:
    """`torchvision.models`, importing torchvision's subpackages without its `__init__`
    when the package cannot be imported whole (the C extension does not load)."""
    try:
        import torchvision.models as models

        return models
    except (ImportError, RuntimeError):
        sys.modules.pop("torchvision", None)
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("torchvision is not installed: pip install --no-deps "
                          "torchvision==0.28.0")
    pkg = types.ModuleType("torchvision")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__file__ = spec.origin
    sys.modules["torchvision"] = pkg
    for name in [m for m in sys.modules if m.startswith("torchvision.")]:
        sys.modules.pop(name)    # a half-imported state from the failed attempt
    return importlib.import_module("torchvision.models")


def resnet18() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = import_models().resnet18(weights=None, num_classes=10).eval()
    return model, (torch.randn(1, 3, 32, 32),)


ZOO: dict[str, Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]] = {
    "resnet18": resnet18,
}

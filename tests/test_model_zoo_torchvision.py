"""ResNet-18 from torchvision's own model code (examples/models/torchvision_zoo.py:
random weights, 32x32 images) brought up on cpu_sim for h100-sxm: every convolution
(and the classifier) on the matmul path, parity OK against eager torch.

Skipped when torchvision is not installed: it is not in the `zoo` extra, because its only
wheel for torch 2.13 is the CUDA build (see the example's docstring); install it with
`pip install --no-deps torchvision==0.28.0` to run this test."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("torchvision") is None:
    pytest.skip("torchvision is not installed", allow_module_level=True)

from hal.devices.loader import load_spec  # noqa: E402
from hal.frontends.bringup import bringup, torch_subject  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _zoo():
    spec = importlib.util.spec_from_file_location(
        "hal_tv_zoo_test", ROOT / "examples" / "models" / "torchvision_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_resnet18_brings_up_with_parity():
    module, inputs = _zoo().ZOO["resnet18"]()
    assert type(module).__module__ == "torchvision.models.resnet"
    subject = torch_subject("resnet18", module, inputs)
    assert subject.model is not None, subject.error
    assert subject.framework_ops.get("aten.convolution.default") == 20
    rep = bringup(subject, "cpu_sim", load_spec("h100-sxm"))
    kinds = {str(getattr(k, "value", k)): v for k, v in rep["fusion"]["kinds"].items()}
    assert kinds.get("matmul") == 21               # 20 convolutions + the classifier
    assert rep["fusion"]["totals"]["kernels"] <= 39   # as measured (issue-17.md)
    assert rep["ok"], rep["parity"]

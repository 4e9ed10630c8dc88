"""Frontends: bring models from PyTorch (torch.export, torch.compile) and JAX into hal graphs.

Each frontend is a registry of converters, one per framework op or primitive,
that emits hal primitives (and composites) through a GraphBuilder. Weights
become graph constants backed by an .npz file (see `frontends.common`), so a
converted graph runs unchanged on every backend and saves as .hal + .npz.

Importing this package needs neither torch nor jax; each frontend module
imports its framework itself.
"""

from hal.frontends.common import ImportedModel, save_model

__all__ = ["ImportedModel", "save_model"]

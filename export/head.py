"""The projection head: every Dense layer of a checkpoint, and folding a reduction into it.

PyLate applies each Dense module as ``activation(linear(x))`` plus, when ``use_residual`` is
set, ``x`` itself (same width) or ``residual(x)`` (a bias-free linear, other width). This
module reproduces that exactly, loads the layers from sentence-transformers module folders
or a Stanford ``linear.weight``, and folds a fitted ``[native_dim, dim]`` projection into
the last linear layer.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_colbert.errors import ExportError

logger = logging.getLogger(__name__)


class DenseLayer(nn.Module):
    """One Dense module as PyLate runs it: ``activation(linear(x)) [+ residual]``."""

    def __init__(
        self,
        linear: nn.Linear,
        activation: nn.Module | None = None,
        residual: nn.Linear | None = None,
        use_residual: bool = False,
    ) -> None:
        super().__init__()
        self.linear = linear
        self.activation = activation if activation is not None else nn.Identity()
        self.use_residual = use_residual
        self.residual = residual

    @property
    def out_features(self) -> int:
        """Width of the layer's output."""
        return int(self.linear.out_features)

    @property
    def is_plain_linear(self) -> bool:
        """True when the output is a bare affine map of the input (a projection folds in)."""
        return isinstance(self.activation, nn.Identity) and not self.use_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to token vectors ``[..., in_features]``."""
        y: torch.Tensor = self.activation(self.linear(x))
        if self.use_residual:
            y = y + (self.residual(x) if self.residual is not None else x)
        return y


def _activation(path: str) -> nn.Module:
    """Instantiate an activation named by its dotted class path (only torch.nn classes)."""
    if not path.startswith("torch."):
        raise ExportError(
            f"Dense activation {path!r} is not a torch.nn class; only torch activations "
            "(for example torch.nn.modules.activation.Tanh) can be exported."
        )
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ExportError(f"Dense activation {path!r} cannot be imported ({error})") from error
    instance = cls()
    if not isinstance(instance, nn.Module):
        raise ExportError(f"Dense activation {path!r} is not a torch module")
    return instance


def _load_state(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a module folder: safetensors first, then pytorch_model.bin."""
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return dict(state)
    raise ExportError(f"{folder} holds no model.safetensors or pytorch_model.bin")


def load_dense_folder(folder: Path) -> DenseLayer:
    """Load a sentence-transformers / PyLate ``Dense`` module folder."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ExportError(f"Dense module folder {folder} has no config.json")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    state = _load_state(folder)
    in_f, out_f = int(config["in_features"]), int(config["out_features"])
    bias = bool(config.get("bias", True))
    linear = nn.Linear(in_f, out_f, bias=bias)
    linear.weight.data.copy_(state["linear.weight"].float())
    if bias:
        linear.bias.data.copy_(state["linear.bias"].float())
    use_residual = bool(config.get("use_residual", False))
    residual = None
    if use_residual and in_f != out_f:
        residual = nn.Linear(in_f, out_f, bias=False)
        residual.weight.data.copy_(state["residual.weight"].float())
    activation = _activation(
        str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
    )
    return DenseLayer(linear, activation, residual, use_residual)


def dense_from_weight(weight: torch.Tensor, bias: torch.Tensor | None = None) -> DenseLayer:
    """A plain linear Dense layer from a weight ``[out, in]`` (Stanford's ``linear``)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    linear.weight.data.copy_(weight.float())
    if bias is not None:
        linear.bias.data.copy_(bias.float())
    return DenseLayer(linear)


def slice_matryoshka(head: list[DenseLayer], dim: int) -> None:
    """Keep the first ``dim`` output rows of the last layer (Matryoshka-trained heads)."""
    last = head[-1]
    if not last.is_plain_linear:
        raise ExportError("a Matryoshka slice needs a plain linear last layer")
    linear = nn.Linear(last.linear.in_features, dim, bias=last.linear.bias is not None)
    linear.weight.data.copy_(last.linear.weight.data[:dim])
    if last.linear.bias is not None:
        linear.bias.data.copy_(last.linear.bias.data[:dim])
    head[-1] = DenseLayer(linear)


def fold_projection(head: list[DenseLayer], projection: np.ndarray, native_dim: int) -> str:
    """Fold ``W [native_dim, dim]`` (reduced = normalize(y @ W)) into the head, in place.

    A plain linear last layer becomes ``W^T L`` with bias ``W^T b``; otherwise (an
    activation, a residual, or no head at all) a bias-free Linear is appended. Returns
    ``"folded"`` or ``"appended"``.
    """
    w = torch.from_numpy(np.ascontiguousarray(projection, dtype=np.float32))
    if w.shape[0] != native_dim:
        raise ExportError(f"projection has {w.shape[0]} rows, the head outputs {native_dim}")
    if head and head[-1].is_plain_linear:
        last = head[-1].linear
        linear = nn.Linear(last.in_features, w.shape[1], bias=last.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(w.T @ last.weight.float())
            if last.bias is not None:
                linear.bias.copy_(w.T @ last.bias.float())
        head[-1] = DenseLayer(linear)
        return "folded"
    linear = nn.Linear(native_dim, w.shape[1], bias=False)
    with torch.no_grad():
        linear.weight.copy_(w.T)
    head.append(DenseLayer(linear))
    return "appended"

"""Derivation: from architecture parameters to the fixed NATS network, written as data.

The derived architecture is a backbone spec of `detnas.nets.backbones` (what ``arch.json`` holds):
``{"kind": "resnet", "depth": 50, "width": 64, "dilations": {"layer1.0": "1,1,2,3", ...}, ...}``,
built by ``build_backbone(spec)`` with exactly the parameters and FLOPs of the plain ResNet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from detnas.io import load_checkpoint
from detnas.nats.ops import is_arch_key, searched_layers
from detnas.nets.resnet import ResNetBackbone
from detnas.plan.dilations import check_candidates, format_dilations

log = logging.getLogger(__name__)


def derive(alphas: Mapping[str, torch.Tensor | list], candidates) -> dict[str, str]:
    """The dilation of each channel group: argmax over its candidates.

    Args:
        alphas: ``{"layer2.0": alpha}`` with ``alpha`` of shape (groups, candidates).
        candidates: the dilations the alphas index, ``[[1, 1], [2, 2], ...]``.

    Returns:
        ``{"layer2.0": "1,2,2,3", ...}``, the encoding of `detnas.plan.dilations.parse_dilations`.

    Raises:
        ValueError: an alpha whose last dimension is not the number of candidates.
    """
    cands = check_candidates(candidates, "derive")
    out = {}
    for name, alpha in alphas.items():
        alpha = torch.as_tensor(alpha)
        if alpha.dim() != 2 or alpha.shape[1] != len(cands):
            raise ValueError(f"derive: alpha of {name} has shape {tuple(alpha.shape)}, expected "
                             f"(groups, {len(cands)}) for candidates {candidates!r}")
        out[name] = format_dilations(cands[k] for k in alpha.argmax(dim=1).tolist())
    return out


def arch_spec(depth: int, width: int, dilations: dict[str, str], **extra) -> dict:
    """The backbone spec of a derived network (``extra``: provenance, search settings)."""
    return {"kind": "resnet", "depth": depth, "width": width, "dilations": dict(dilations), **extra}


def arch_tag(dilations: Mapping[str, str]) -> str:
    """The architecture as one line, for MLflow tags and logs: ``layer1.0:1,2,2,3;layer1.1:...``."""
    return ";".join(f"{name}:{enc}" for name, enc in dilations.items())


def alphas_of(net: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the alphas of a searchable backbone, by block name."""
    return {name: m.alpha.detach().cpu().clone() for name, m in searched_layers(net).items()}


def derive_checkpoint(path: str | Path) -> dict:
    """The derived architecture spec of a search checkpoint (``search.pt``).

    Raises:
        ValueError: the file is not a NATS search checkpoint.
    """
    ckpt = load_checkpoint(path)
    missing = [k for k in ("alphas", "candidates", "depth", "width") if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a NATS search checkpoint (no {missing[0]!r} entry)")
    dilations = derive(ckpt["alphas"], ckpt["candidates"])
    log.info("derived from %s (step %s): %s", path, ckpt.get("step"), arch_tag(dilations))
    return arch_spec(ckpt["depth"], ckpt["width"], dilations, candidates=ckpt["candidates"],
                     search_step=ckpt.get("step"), provenance=ckpt.get("provenance", {}))


def derived_backbone(search_net: ResNetBackbone, dilations: dict[str, str] | None = None,
                     norm_layer=nn.BatchNorm2d) -> ResNetBackbone:
    """A fixed `ResNetBackbone` of ``dilations`` (default: the argmax) with copied weights.

    Every weight of ``search_net`` (a searchable `ResNetBackbone`) loads by its unchanged name.
    """
    if dilations is None:
        dilations = {name: format_dilations(m.choice())
                     for name, m in searched_layers(search_net).items()}
    net = ResNetBackbone(search_net.depth, search_net.width, norm_layer, dilations)
    state = {k: v for k, v in search_net.state_dict().items() if not is_arch_key(k)}
    net.load_state_dict(state)
    return net.to(next(search_net.parameters()).device)

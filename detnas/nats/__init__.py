"""NATS: channel-level dilation transformation search of a pretrained ResNet (NeurIPS 2019).

`ops` holds the searchable conv, `search` the alternating search stage, `derive` the fixed
network written as a backbone spec (built by `detnas.backbones.build_backbone`).
"""

from detnas.nats.derive import arch_spec, arch_tag, derive, derive_checkpoint, derived_backbone
from detnas.nats.ops import (
    DilationMixConv,
    arch_parameters,
    make_searchable,
    searched_layers,
    weight_parameters,
)
from detnas.nats.search import build_search_model, load_pretrained, search

__all__ = [
    "DilationMixConv", "arch_parameters", "arch_spec", "arch_tag", "build_search_model", "derive",
    "derive_checkpoint", "derived_backbone", "load_pretrained", "make_searchable", "search",
    "searched_layers", "weight_parameters",
]

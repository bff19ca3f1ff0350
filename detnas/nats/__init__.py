"""NATS: channel-level dilation transformation search of a pretrained ResNet (NeurIPS 2019).

`detnas.nats.ops` holds the searchable conv, `detnas.nats.search` the alternating search stage
(``search.search``), `detnas.nats.derive` the derivation (``derive.derive``) of the fixed network,
written as a backbone spec that `detnas.nets.backbones.build_backbone` builds.
"""

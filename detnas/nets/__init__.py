"""The networks: ShuffleNetV2 choice blocks and supernets, ResNet, the detectors built on them, and
their BN."""

"""detnas: backbone search for object detection (DetNAS and NATS)."""

__version__ = "0.1.0"

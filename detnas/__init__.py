"""detnas: backbone search for object detection (DetNAS and NATS)."""

from detnas.version import __version__

__all__ = ["__version__", "backbone"]


def __getattr__(name: str):
    # `detnas.backbone` without importing torch at `import detnas` time
    if name == "backbone":
        from detnas.nets.models import backbone

        return backbone
    raise AttributeError(f"module 'detnas' has no attribute {name!r}")

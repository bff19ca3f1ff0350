"""The version of detnas (pyproject.toml's): a module of its own at the bottom of the package, so
that what records it (`detnas.provenance`) does not import the package's face."""

__version__ = "0.1.0"

"""The version string, in a module of its own: the file-format modules record it without importing
the package's top level (which imports everything above them)."""

__version__ = "0.1.0"

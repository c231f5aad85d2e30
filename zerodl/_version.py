"""The version string, in a module of its own: any floor (the file-format modules record it) reads it
without importing the package's top level, which imports everything above them."""

__version__ = "0.2.0"

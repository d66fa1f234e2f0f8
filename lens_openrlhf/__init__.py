"""LENS for OpenRLHF."""

__version__ = "0.1.0"

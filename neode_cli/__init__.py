"""neode: the command-line lab for neural ordinary differential equations."""

__version__ = "0.1.0"

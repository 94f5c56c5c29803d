"""qkv: a command-line attention calculator that shows every stage of the computation."""

__version__ = "0.1.0"

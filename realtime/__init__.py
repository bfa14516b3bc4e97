"""realtime: a real-time backend for mobile apps."""

__version__ = "0.1.0"

"""aslfr: fingerspelled American Sign Language recognition from MediaPipe landmarks."""

__version__ = "0.1.0"

"""aslfr: fingerspelled American Sign Language recognition from MediaPipe landmarks."""

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - `aslfr.Recognizer` without importing it up front
    if name in ("Recognizer", "Stream", "Phrase"):
        from aslfr import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'aslfr' has no attribute {name!r}")

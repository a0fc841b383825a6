"""The teacher encoders: `load_teacher(name_or_path)` -> Teacher with `.embed(texts)`; see docs/ARCHITECTURE.md.

Imports are lazy so `teacher.hub` (name resolution, downloads) and `python -m teacher fetch` need no tinygrad.
"""
__all__ = ["Teacher", "load_teacher"]


def __getattr__(name: str):
  if name in __all__:
    from teacher import embedder
    return getattr(embedder, name)
  raise AttributeError(f"module 'teacher' has no attribute {name!r}")

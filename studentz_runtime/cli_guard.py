"""The last guard of a command-line entry point: what escapes main() as an OSError becomes one line, not a traceback.

Output piped to `head -1` (BrokenPipeError) ends quietly with status 0, as `yes | head -1` does; a full device
(`> /dev/full`, a disk filling up during a checkpoint) gives `error: ...: No space left on device`, status 1."""
from __future__ import annotations
import errno, os, sys


def _detach_stdout() -> None:
  """Point stdout at /dev/null: Python's own flush at exit would hit the same closed pipe or full device again."""
  try: os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  except (OSError, ValueError): pass


def guarded(main, *args) -> int:
  """main(*args)'s exit status; stdout is flushed inside, so its errors are caught here rather than at exit."""
  try:
    rc = main(*args)
    sys.stdout.flush()
    return rc
  except BrokenPipeError:
    _detach_stdout()
    return 0
  except OSError as e:
    _detach_stdout()
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    hint = ": free some space and run again" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    print(f"error: {e.strerror or e}{where}{hint}", file=sys.stderr)
    return 1

"""One step ahead in a background thread: while the caller works on item i, item i+1 is being prepared.

Meant for work that releases the GIL (the Rust tokenizer): texts of the next batch are tokenized while the device runs
the current one."""
from __future__ import annotations
from concurrent.futures import ThreadPoolExecutor


def ahead(fn, items):
  """Yields fn(item) for every item, in order, computing the next result in one background thread meanwhile. An
  exception raised by fn comes out where its result would have; fewer than two items run in the caller's thread."""
  items = list(items)
  if len(items) < 2:
    yield from map(fn, items)
    return
  with ThreadPoolExecutor(1, thread_name_prefix="studentz-prefetch") as pool:
    pending = pool.submit(fn, items[0])
    for item in items[1:]:
      done, pending = pending.result(), pool.submit(fn, item)
      yield done
    yield pending.result()

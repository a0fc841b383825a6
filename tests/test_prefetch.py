"""prefetch.ahead: results in order, the next item computed in another thread while the caller holds the current one,
and an exception of fn surfacing where its result would have."""
import threading
from collections import defaultdict

import pytest

from studentz_runtime import prefetch


def test_ahead_keeps_order_and_works_one_item_ahead():
  started = defaultdict(threading.Event)
  threads = {}

  def fn(i):
    started[i].set()
    threads[i] = threading.current_thread()
    return i * 10
  got = []
  for r in prefetch.ahead(fn, range(4)):
    i = r // 10
    # while the caller holds item i, item i+1 is already under way
    if i < 3: assert started[i + 1].wait(5), f"item {i + 1} had not started while the caller held item {i}"
    got.append(r)
  assert got == [0, 10, 20, 30]
  assert all(t is not threading.main_thread() for t in threads.values())
  assert list(prefetch.ahead(fn, [7])) == [70] and threads[7] is threading.main_thread()
  assert list(prefetch.ahead(fn, [])) == []


def test_ahead_raises_where_the_failing_result_was():
  def fn(i):
    if i == 2: raise KeyError("boom")
    return i
  it = prefetch.ahead(fn, range(4))
  assert [next(it), next(it)] == [0, 1]
  with pytest.raises(KeyError, match="boom"): next(it)

"""A small progress bar on stderr (rate, ETA, live figures) so long jobs never look hung; no tqdm dependency."""
import sys, time


def _fmt_time(s: float) -> str:
  if s != s or s == float("inf"): return "?"
  s = int(s)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
  """`Progress(total, desc, unit)`; `update(n, **figures)` adds n done items and shows figures like loss=0.12."""

  def __init__(self, total: int | None, desc: str = "", unit: str = "it", stream=None, min_interval: float = 0.5,
               disable: bool = False):
    self.total, self.desc, self.unit, self.n = total, desc, unit, 0
    self.stream = stream or sys.stderr
    self.min_interval, self.disable = min_interval, disable
    self.start = self.last_draw = time.perf_counter()
    self.figures: dict = {}
    # redraw in place on a terminal; on a pipe/log, print whole lines less often
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    if not self.tty: self.min_interval = max(min_interval, 10.0)

  @property
  def rate(self) -> float:
    dt = time.perf_counter() - self.start
    return self.n / dt if dt > 0 else 0.0

  def update(self, n: int = 1, **figures) -> None:
    self.n += n
    self.figures.update(figures)
    now = time.perf_counter()
    if now - self.last_draw >= self.min_interval or (self.total is not None and self.n >= self.total):
      self.last_draw = now
      self._draw()

  def line(self) -> str:
    rate = self.rate
    done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
    pct = f"{100 * self.n / self.total:3.0f}% " if self.total else ""
    eta = _fmt_time((self.total - self.n) / rate) if self.total and rate > 0 else "?"
    figs = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.figures.items())
    el = _fmt_time(time.perf_counter() - self.start)
    return f"{self.desc}: {pct}{done} [{el}<{eta}, {rate:.1f} {self.unit}/s] {figs}".rstrip()

  def _draw(self) -> None:
    if self.disable: return
    self.drawn_n = self.n
    if self.tty: self.stream.write("\r\033[K" + self.line())
    else: self.stream.write(self.line() + "\n")
    self.stream.flush()

  def close(self) -> None:
    if self.disable: return
    if getattr(self, "drawn_n", None) != self.n or self.tty: self._draw()
    if self.tty: self.stream.write("\n")
    self.stream.flush()

  def __enter__(self): return self
  def __exit__(self, *exc): self.close()

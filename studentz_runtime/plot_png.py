"""Simple charts drawn straight into PNG files with numpy + zlib (no Pillow, no matplotlib).

  encode_png(img) / write_png(path, img)   the repository's one PNG writer ((H, W, 3) uint8 -> bytes / file)
  Canvas                                   RGB pixels with lines, rectangles, filled markers and 5x7 bitmap text
  scatter_plot(points, path, ...)          labelled points, log-x by default, with ticks, gridlines and a legend
  vector_heatmap(scaled, vmax, cmap, ...)  a vector's grid with title, index labels, colour bar and footer
"""
from __future__ import annotations
import math, struct, zlib
from pathlib import Path

import numpy as np

WHITE, BLACK = (255, 255, 255), (0, 0, 0)
INK, GRID, FRAME = (40, 40, 40), (225, 225, 225), (90, 90, 90)
# Tableau 10: distinct under the common colour-vision deficiencies, and none of them is a grey used for ink or grid
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
SHAPES = ["o", "D", "s", "^"]


# ---- PNG ------------------------------------------------------------------------------------------------------------

def encode_png(img: np.ndarray) -> bytes:
  """An 8-bit truecolour PNG of an (H, W, 3) uint8 array. Every scanline uses filter 0 (none): charts and heatmaps
  are flat areas that zlib packs well without prediction, and the writer stays a few lines."""
  img = np.asarray(img)
  if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.shape[0] < 1 or img.shape[1] < 1:
    raise ValueError(f"encode_png wants a non-empty (H, W, 3) uint8 array, got {img.dtype} {img.shape}")
  h, w = img.shape[:2]

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
  raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_png(path, img: np.ndarray) -> None:
  Path(path).write_bytes(encode_png(img))


# ---- 5x7 bitmap font ------------------------------------------------------------------------------------------------
# One glyph a line: the character, then its rows of 5 pixels: 7 above the baseline, and 2 more for the letters and
# marks that descend below it (g j p q y , ;). Every glyph has the same 5x9 box, so text layout is a multiplication.
_FONT_TABLE = r"""
  00000 00000 00000 00000 00000 00000 00000
0 01110 10001 10011 10101 11001 10001 01110
1 00100 01100 00100 00100 00100 00100 01110
2 01110 10001 00001 00010 00100 01000 11111
3 11111 00010 00100 00010 00001 10001 01110
4 00010 00110 01010 10010 11111 00010 00010
5 11111 10000 11110 00001 00001 10001 01110
6 00110 01000 10000 11110 10001 10001 01110
7 11111 00001 00010 00100 01000 01000 01000
8 01110 10001 10001 01110 10001 10001 01110
9 01110 10001 10001 01111 00001 00010 01100
A 01110 10001 10001 11111 10001 10001 10001
B 11110 10001 10001 11110 10001 10001 11110
C 01110 10001 10000 10000 10000 10001 01110
D 11100 10010 10001 10001 10001 10010 11100
E 11111 10000 10000 11110 10000 10000 11111
F 11111 10000 10000 11110 10000 10000 10000
G 01110 10001 10000 10111 10001 10001 01111
H 10001 10001 10001 11111 10001 10001 10001
I 01110 00100 00100 00100 00100 00100 01110
J 00111 00010 00010 00010 00010 10010 01100
K 10001 10010 10100 11000 10100 10010 10001
L 10000 10000 10000 10000 10000 10000 11111
M 10001 11011 10101 10101 10001 10001 10001
N 10001 10001 11001 10101 10011 10001 10001
O 01110 10001 10001 10001 10001 10001 01110
P 11110 10001 10001 11110 10000 10000 10000
Q 01110 10001 10001 10001 10101 10010 01101
R 11110 10001 10001 11110 10100 10010 10001
S 01111 10000 10000 01110 00001 00001 11110
T 11111 00100 00100 00100 00100 00100 00100
U 10001 10001 10001 10001 10001 10001 01110
V 10001 10001 10001 10001 10001 01010 00100
W 10001 10001 10001 10101 10101 10101 01010
X 10001 10001 01010 00100 01010 10001 10001
Y 10001 10001 10001 01010 00100 00100 00100
Z 11111 00001 00010 00100 01000 10000 11111
a 00000 00000 01110 00001 01111 10001 01111
b 10000 10000 10110 11001 10001 10001 11110
c 00000 00000 01110 10000 10000 10001 01110
d 00001 00001 01101 10011 10001 10001 01111
e 00000 00000 01110 10001 11111 10000 01110
f 00110 01001 01000 11100 01000 01000 01000
g 00000 00000 01111 10001 10001 10001 01111 00001 01110
h 10000 10000 10110 11001 10001 10001 10001
i 00100 00000 01100 00100 00100 00100 01110
j 00010 00000 00110 00010 00010 00010 00010 10010 01100
k 10000 10000 10010 10100 11000 10100 10010
l 01100 00100 00100 00100 00100 00100 01110
m 00000 00000 11010 10101 10101 10001 10001
n 00000 00000 10110 11001 10001 10001 10001
o 00000 00000 01110 10001 10001 10001 01110
p 00000 00000 11110 10001 10001 10001 11110 10000 10000
q 00000 00000 01111 10001 10001 10001 01111 00001 00001
r 00000 00000 10110 11001 10000 10000 10000
s 00000 00000 01110 10000 01110 00001 11110
t 01000 01000 11100 01000 01000 01001 00110
u 00000 00000 10001 10001 10001 10011 01101
v 00000 00000 10001 10001 10001 01010 00100
w 00000 00000 10001 10001 10101 10101 01010
x 00000 00000 10001 01010 00100 01010 10001
y 00000 00000 10001 10001 10001 10001 01111 00001 01110
z 00000 00000 11111 00010 00100 01000 11111
. 00000 00000 00000 00000 00000 01100 01100
, 00000 00000 00000 00000 00000 01100 01100 00100 01000
- 00000 00000 00000 11111 00000 00000 00000
+ 00000 00100 00100 11111 00100 00100 00000
% 11000 11001 00010 00100 01000 10011 00011
( 00010 00100 01000 01000 01000 00100 00010
) 01000 00100 00010 00010 00010 00100 01000
/ 00000 00001 00010 00100 01000 10000 00000
\ 00000 10000 01000 00100 00010 00001 00000
: 00000 01100 01100 00000 01100 01100 00000
; 00000 01100 01100 00000 00000 01100 01100 00100 01000
= 00000 00000 11111 00000 11111 00000 00000
_ 00000 00000 00000 00000 00000 00000 11111
' 01100 00100 01000 00000 00000 00000 00000
" 01010 01010 01010 00000 00000 00000 00000
` 01000 00100 00010 00000 00000 00000 00000
! 00100 00100 00100 00100 00100 00000 00100
? 01110 10001 00001 00010 00100 00000 00100
# 01010 01010 11111 01010 11111 01010 01010
* 00000 00100 10101 01110 10101 00100 00000
< 00010 00100 01000 10000 01000 00100 00010
> 01000 00100 00010 00001 00010 00100 01000
[ 01110 01000 01000 01000 01000 01000 01110
] 01110 00010 00010 00010 00010 00010 01110
{ 00010 00100 00100 01000 00100 00100 00010
} 01000 00100 00100 00010 00100 00100 01000
| 00100 00100 00100 00100 00100 00100 00100
& 01100 10010 10100 01000 10101 10010 01101
@ 01110 10001 00001 01101 10101 10101 01110
~ 00000 00000 01000 10101 00010 00000 00000
^ 00100 01010 10001 00000 00000 00000 00000
$ 00100 01111 10100 01110 00101 11110 00100
"""
GLYPH_W, GLYPH_H = 5, 9
CAP_H = 7  # rows above the baseline: what the eye centres when text is placed beside a tick or a marker
FONT = {line[0]: np.array([[c == "1" for c in row] for row in (line[2:] + " 00000 00000").split()[:GLYPH_H]], bool)
        for line in _FONT_TABLE.split("\n") if line}
# characters outside the table (non-ASCII, control) print as '?' rather than vanishing from a label
_FALLBACK = FONT["?"]
assert all(g.shape == (GLYPH_H, GLYPH_W) for g in FONT.values())


def text_size(s: str, scale: int = 1) -> tuple[int, int]:
  """(width, height) in pixels of one line of text: 5-pixel glyphs with one pixel between them, times scale."""
  return max(len(s) * (GLYPH_W + 1) - 1, 0) * scale, GLYPH_H * scale


def text_mask(s: str, scale: int = 1) -> np.ndarray:
  """Boolean (height, width) pixels of one line of text."""
  m = np.zeros((GLYPH_H, max(len(s) * (GLYPH_W + 1) - 1, 0)), bool)
  for i, ch in enumerate(s):
    m[:, i * (GLYPH_W + 1): i * (GLYPH_W + 1) + GLYPH_W] = FONT.get(ch, _FALLBACK)
  return np.repeat(np.repeat(m, scale, axis=0), scale, axis=1)


# ---- canvas ---------------------------------------------------------------------------------------------------------

class Canvas:
  """An RGB image with (x right, y down) pixel coordinates; anything drawn off the edges is clipped."""

  def __init__(self, width: int, height: int, background=WHITE):
    self.pixels = np.empty((height, width, 3), np.uint8)
    self.pixels[:] = background

  @property
  def width(self) -> int: return self.pixels.shape[1]

  @property
  def height(self) -> int: return self.pixels.shape[0]

  def paint(self, x0: int, y0: int, mask: np.ndarray, color) -> None:
    """Set the pixels where `mask` (placed with its top-left corner at x0, y0) is true."""
    h, w = mask.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, self.width), min(y0 + h, self.height)
    if cx0 >= cx1 or cy0 >= cy1: return
    sub = mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    self.pixels[cy0:cy1, cx0:cx1][sub] = color

  def rect(self, x0: int, y0: int, x1: int, y1: int, color, fill: bool = True) -> None:
    """The rectangle with corners (x0, y0) and (x1, y1), both included."""
    x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    if fill:
      self.paint(x0, y0, np.ones((y1 - y0 + 1, x1 - x0 + 1), bool), color)
    else:
      for a, b, c, d in ((x0, y0, x1, y0), (x0, y1, x1, y1), (x0, y0, x0, y1), (x1, y0, x1, y1)):
        self.line(a, b, c, d, color)

  def line(self, x0: float, y0: float, x1: float, y1: float, color, width: int = 1, dash: int = 0) -> None:
    """A straight line one sample per pixel step; `dash` > 0 draws dash-pixel strokes with dash-pixel gaps."""
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.rint(np.linspace(x0, x1, n)).astype(int)
    ys = np.rint(np.linspace(y0, y1, n)).astype(int)
    if dash > 0:
      keep = (np.arange(n) // dash) % 2 == 0
      xs, ys = xs[keep], ys[keep]
    for off_y in range(-(width // 2), width - width // 2):
      for off_x in range(-(width // 2), width - width // 2):
        x, y = xs + off_x, ys + off_y
        ok = (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)
        self.pixels[y[ok], x[ok]] = color

  def marker(self, cx: float, cy: float, shape: str, r: float, color, edge=None) -> None:
    """A filled marker centred on (cx, cy): 'o' circle, 's' square, 'D' diamond, '^' triangle; `edge` outlines it."""
    for rr, c in ((r, edge), (r - 1.5, color)) if edge is not None else ((r, color),):
      self.paint(int(round(cx)) - int(r) - 1, int(round(cy)) - int(r) - 1, _marker_mask(shape, rr, int(r) + 1), c)

  def circle(self, cx: float, cy: float, r: float, color) -> None:
    self.marker(cx, cy, "o", r, color)

  def text(self, x: int, y: int, s: str, color=INK, scale: int = 1, anchor: str = "lt",
           vertical: bool = False) -> tuple[int, int, int, int]:
    """One line of text; anchor = horizontal l/c/r + vertical t/m/b of the box placed at (x, y). `vertical` reads
    bottom to top (a y-axis label). Returns the box (x0, y0, x1, y1) it covers."""
    m = text_mask(s, scale)
    if vertical: m = np.rot90(m)
    h, w = m.shape
    x0 = x - {"l": 0, "c": w // 2, "r": w}[anchor[0]]
    y0 = y - {"t": 0, "m": (CAP_H * scale if not vertical else h) // 2, "b": h}[anchor[1]]
    self.paint(x0, y0, m, color)
    return x0, y0, x0 + w, y0 + h

  def to_png(self) -> bytes:
    return encode_png(self.pixels)

  def save(self, path) -> None:
    write_png(path, self.pixels)


def _marker_mask(shape: str, r: float, half: int) -> np.ndarray:
  d = np.arange(-half, half + 1)
  dy, dx = np.meshgrid(d, d, indexing="ij")
  if shape == "s": return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
  if shape == "D": return np.abs(dx) + np.abs(dy) <= r * 1.2
  if shape == "^": return (dy >= -r) & (dy <= r * 0.8) & (np.abs(dx) <= (dy + r) * 0.6)
  return dx * dx + dy * dy <= r * r + 0.25  # 'o' (and anything unknown)


def darker(color, f: float = 0.6) -> tuple[int, int, int]:
  return tuple(int(c * f) for c in color)


# ---- axes -----------------------------------------------------------------------------------------------------------

class Axis:
  """Data value -> pixel along one axis (linear or log10), lo..hi onto p0..p1 (p0 > p1 for an upward y axis)."""

  def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool):
    self.lo, self.hi, self.p0, self.p1, self.log = lo, hi, p0, p1, log

  def _f(self, v: float) -> float: return math.log10(v) if self.log else v

  def __call__(self, v: float) -> float:
    return self.p0 + (self._f(v) - self._f(self.lo)) / (self._f(self.hi) - self._f(self.lo)) * (self.p1 - self.p0)


def log_range(values) -> tuple[float, float]:
  """Padded log-axis limits: at least 0.2 decade either side so single points and tight clusters get context."""
  lo, hi = math.log10(min(values)), math.log10(max(values))
  pad = max(0.08 * (hi - lo), 0.2)
  return 10 ** (lo - pad), 10 ** (hi + pad)


def linear_range(values) -> tuple[float, float]:
  lo, hi = min(values), max(values)
  span = hi - lo if hi > lo else max(abs(hi) * 0.1, 0.05)
  return lo - 0.1 * span, hi + 0.1 * span


def log_ticks(lo: float, hi: float) -> list[float]:
  """Ticks at 1, 2 and 5 times powers of 10 (only powers of 10 past 4 decades, so labels never crowd), or at every
  integer multiple when the range is too narrow to hold two of those."""
  k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
  for mults in (((1,) if math.log10(hi / lo) > 4 else (1, 2, 5)), range(1, 10)):
    ticks = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in mults if lo <= m * 10.0 ** k <= hi]
    if len(ticks) >= 2: return ticks
  return ticks


def linear_ticks(lo: float, hi: float, n: int = 6) -> tuple[list[float], float]:
  """About n ticks on a 1 / 2 / 2.5 / 5 x 10^k step; returns (ticks, step)."""
  raw = (hi - lo) / n
  mag = 10.0 ** math.floor(math.log10(raw))
  step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
  first = math.ceil(lo / step - 1e-9) * step
  ticks = [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]
  return [0.0 if abs(t) < step * 1e-9 else t for t in ticks], step


def fmt_count(v: float) -> str:
  """Compact axis label for a count: 500, 2k, 10k, 1.5M, 0.2."""
  for div, suffix in ((1e6, "M"), (1e3, "k")):
    if v >= div: return f"{v / div:g}{suffix}"
  return f"{v:g}"


def fmt_linear(v: float, step: float) -> str:
  """Just enough decimals to tell ticks `step` apart (one more for a 2.5 x 10^k step)."""
  mag = math.floor(math.log10(step) + 1e-9)
  decimals = max(0, -mag) + (1 if round(step / 10 ** mag, 6) == 2.5 else 0)
  return f"{v:.{decimals}f}"


def _overlap(a, b) -> bool:
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(box, area) -> bool:
  return box[0] >= area[0] and box[1] >= area[1] and box[2] <= area[2] and box[3] <= area[3]


# ---- scatter plot ---------------------------------------------------------------------------------------------------

def scatter_plot(points, path, title: str, xlabel: str, ylabel: str, logx: bool = True, subtitle: str | None = None,
                 size: tuple[int, int] = (960, 640), scale: int = 2) -> dict:
  """Draw labelled points and write a PNG to `path`.

  points: dicts with x, y (finite numbers; x > 0 on a log axis), label (text beside the point) and group (one colour
  and marker shape per group, in order of first appearance, shown in the legend).
  Returns the layout: {"size", "plot_area" (x0, y0, x1, y1), "points" [(px, py)], "styles" {group: (colour, shape)}}.
  """
  pts = _checked_points(points, logx)
  groups = list(dict.fromkeys(str(p.get("group", "")) for p in pts))
  styles = {g: (PALETTE[i % len(PALETTE)], SHAPES[i % len(SHAPES)]) for i, g in enumerate(groups)}
  W, H = size
  cv = Canvas(W, H)
  lh = (GLYPH_H + 2) * scale  # line height
  top = 14 + (GLYPH_H + 1) * (scale + 1) + (lh if subtitle else 0)
  area = (14 + lh + 6 * (GLYPH_W + 1) * scale, top, W - 24, H - 2 * lh - 22)  # x0, y0, x1, y1 of the plot frame
  x0, y0, x1, y1 = area
  xs, ys = [p["x"] for p in pts], [p["y"] for p in pts]
  xlo, xhi = log_range(xs) if logx else linear_range(xs)
  ylo, yhi = linear_range(ys)
  ax, ay = Axis(xlo, xhi, x0, x1, logx), Axis(ylo, yhi, y1, y0, False)
  _grid_and_ticks(cv, ax, ay, (xlo, xhi), (ylo, yhi), area, logx, scale)
  cv.text(W // 2, 12, title, BLACK, scale + 1, "ct")
  if subtitle: cv.text(W // 2, 12 + (GLYPH_H + 1) * (scale + 1), subtitle, FRAME, scale, "ct")
  cv.text((x0 + x1) // 2, H - 10, xlabel, INK, scale, "cb")
  cv.text(12, (y0 + y1) // 2, ylabel, INK, scale, "lm", vertical=True)
  r = 4 * scale
  pos = [(ax(p["x"]), ay(p["y"])) for p in pts]
  taken = [(px - r, py - r, px + r, py + r) for px, py in pos]  # labels avoid markers and each other
  for p, (px, py) in zip(pts, pos):
    color, shape = styles[str(p.get("group", ""))]
    cv.marker(px, py, shape, r, color, edge=darker(color))
  _place_labels(cv, pts, pos, taken, area, r, lh, scale)
  _legend(cv, styles, area, taken, scale, r)
  cv.save(path)
  return {"size": (W, H), "plot_area": area, "points": pos, "styles": styles}


def _checked_points(points, logx: bool) -> list:
  """The points as a list, refusing an empty one or any point that cannot be placed on the axes."""
  pts = list(points)
  if not pts: raise ValueError("no points to plot")
  for i, p in enumerate(pts):
    for key in ("x", "y"):
      v = p.get(key)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"point {i} ({p.get('label', '')!r}) has no finite {key}: {v!r}")
    if logx and p["x"] <= 0: raise ValueError(f"point {i} ({p.get('label', '')!r}) has x={p['x']} <= 0 on a log axis")
  return pts


def _grid_and_ticks(cv: Canvas, ax, ay, xrange, yrange, area, logx: bool, scale: int) -> None:
  """Grid lines, tick marks and tick labels on both axes, then the plot frame over them."""
  (xlo, xhi), (ylo, yhi), (x0, y0, x1, y1) = xrange, yrange, area
  if logx: xticks, xlabels = log_ticks(xlo, xhi), None
  else:
    xticks, xstep = linear_ticks(xlo, xhi)
    xlabels = [fmt_linear(t, xstep) for t in xticks]
  yticks, ystep = linear_ticks(ylo, yhi)
  for i, t in enumerate(xticks):
    px = round(ax(t))
    cv.line(px, y0, px, y1, GRID)
    cv.line(px, y1, px, y1 + 5, FRAME)
    cv.text(px, y1 + 9, fmt_count(t) if logx else xlabels[i], INK, scale, "ct")
  for t in yticks:
    py = round(ay(t))
    cv.line(x0, py, x1, py, GRID)
    cv.line(x0 - 5, py, x0, py, FRAME)
    cv.text(x0 - 9, py, fmt_linear(t, ystep), INK, scale, "rm")
  cv.rect(x0, y0, x1, y1, FRAME, fill=False)


def _place_labels(cv: Canvas, pts, pos, taken: list, area, r: int, lh: int, scale: int) -> None:
  """Each point's label at the first of eight spots beside it that stays inside the plot and clear of `taken`."""
  for p, (px, py) in zip(pts, pos):
    label = str(p.get("label", ""))
    if not label: continue
    w, h = text_size(label, scale)
    gap = r + 4
    ty = py - CAP_H * scale / 2  # top of a label centred on the point
    spots = [(px + gap, ty), (px - gap - w, ty), (px - w / 2, py - gap - h), (px - w / 2, py + gap),
             (px + gap, ty - lh), (px + gap, ty + lh), (px - gap - w, ty - lh), (px - gap - w, ty + lh)]
    boxes = [(round(a), round(b), round(a) + w, round(b) + h) for a, b in spots]
    fits = [b for b in boxes if _inside(b, area)] or boxes
    box = next((b for b in fits if not any(_overlap(b, t) for t in taken)), fits[0])
    taken.append(box)
    cv.text(box[0], box[1], label, INK, scale, "lt")


def _legend(cv: Canvas, styles: dict, area, taken: list, scale: int, r: int) -> tuple[int, int, int, int]:
  """Legend box in the corner of the plot area that covers the fewest markers and labels."""
  lh = (GLYPH_H + 4) * scale
  w = 3 * r + 8 + max(text_size(g, scale)[0] for g in styles) + 12
  h = lh * len(styles) + 10
  x0, y0, x1, y1 = area
  m = 8
  corners = [(x0 + m, y0 + m), (x1 - m - w, y1 - m - h), (x1 - m - w, y0 + m), (x0 + m, y1 - m - h)]
  boxes = [(a, b, a + w, b + h) for a, b in corners]
  box = min(boxes, key=lambda b: sum(_overlap(b, t) for t in taken))
  cv.rect(*box, WHITE)
  cv.rect(*box, FRAME, fill=False)
  for i, (g, (color, shape)) in enumerate(styles.items()):
    cy = box[1] + 5 + lh * i + (lh - 2 * scale) // 2
    cv.marker(box[0] + 6 + r, cy, shape, r, color, edge=darker(color))
    cv.text(box[0] + 6 + 2 * r + 8, cy, g or "(none)", INK, scale, "lm")
  return box


# the grid z is shown on (infer.py's heatmap and PNG); here so showing z needs no tinygrad

def display_grid(dim: int) -> tuple[int, int]:
  """The grid z is shown on: 768 -> 32x24, 384 -> 16x24; other sizes get the squarest factorisation."""
  if dim % 24 == 0: return dim // 24, 24
  best = max(r for r in range(1, int(math.isqrt(dim)) + 1) if dim % r == 0)
  return dim // best, best


def as_grid(z: np.ndarray) -> np.ndarray:
  """z (..., D) -> (..., rows, cols) for display."""
  r, c = display_grid(z.shape[-1])
  return z.reshape(*z.shape[:-1], r, c)


# ---- labelled heatmap of one vector (infer.py --png) ----------------------------------------------------------------

def fit_text(s: str, max_px: int, scale: int = 1) -> str:
  """`s` on one line, cut with '...' so it spans at most max_px pixels (a long input must not run off the image)."""
  s = " ".join(s.split())  # newlines and tabs have no glyph: one line of single spaces
  if text_size(s, scale)[0] <= max_px: return s
  n = max((max_px // scale + 1) // (GLYPH_W + 1) - 3, 0)
  return s[:n].rstrip() + "..."


def label_step(n: int, cell: int, label_px: int) -> int:
  """Label every step-th of n cells, step from 1, 2, 4, 5, 8, 10, ...: neighbouring labels keep 6 px apart."""
  for step in (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100):
    if step * cell >= label_px + 6 or step >= n: return step
  return n


def vector_heatmap(scaled: np.ndarray, vmax: float, cmap, title: str, footer: str, cell: int = 16,
                   scale: int = 2) -> tuple[Canvas, dict]:
  """A vector's display grid as a labelled figure: title, cells with index labels, colour bar, footer.

  scaled: (rows, cols) values in [-1, 1], the vector reshaped row by row, coloured cmap(scaled) ((..., 3) uint8);
  vmax: the value that +1 stands for, so the bar reads -vmax, 0, +vmax. Rows are labelled with the index of their
  first component and columns with the offset in the row: a cell is component (row label + column label).
  Returns the canvas and its layout {"size", "title" box, "grid" (x0, y0, cell), "bar" box, "bar_labels" box}.
  """
  rows, cols = scaled.shape
  lay = _heatmap_layout(rows, cols, footer, vmax, cell, scale)
  cv = Canvas(*lay["size"])
  W, pad, th = lay["size"][0], 12, GLYPH_H * scale
  lay["title"] = cv.text(W // 2, pad, fit_text(title, W - 2 * pad, scale), BLACK, scale, "ct")
  x0, y0, _ = lay["grid"]
  cv.pixels[y0:y0 + rows * cell, x0:x0 + cols * cell] = np.repeat(np.repeat(cmap(scaled), cell, 0), cell, 1)
  cv.rect(x0 - 1, y0 - 1, x0 + cols * cell, y0 + rows * cell, FRAME, fill=False)
  _index_labels(cv, rows, cols, lay["grid"], scale)
  lay["bar_labels"] = _colour_bar(cv, lay["bar"], vmax, cmap, scale)
  cv.text(pad, lay["size"][1] - pad - th, footer, INK, scale, "lt")
  return cv, lay


def _scale_labels(vmax: float) -> list[str]:
  """Top, middle, bottom of the colour bar; the sign is spelled out so +/- read at a glance."""
  return [f"{vmax:+.3g}", "0", f"{-vmax:+.3g}"]


def _heatmap_layout(rows: int, cols: int, footer: str, vmax: float, cell: int, scale: int) -> dict:
  """Pixel positions: title on top, column labels, grid with row labels on its left, bar right, footer below."""
  pad, th = 12, GLYPH_H * scale
  left = pad + text_size(str((rows - 1) * cols), scale)[0] + 8
  top = pad + th + 12 + th + 8
  gw, gh = cols * cell, rows * cell
  bar_h = max(gh, 8 * th)  # a one-row grid still gets a bar tall enough to read as a gradient
  bx0 = left + gw + 20
  bar = (bx0, top, bx0 + 15, top + bar_h - 1)
  labels_w = max(text_size(s, scale)[0] for s in _scale_labels(vmax))
  W = max(bar[2] + 10 + labels_w + pad, text_size(footer, scale)[0] + 2 * pad)
  H = top + bar_h + 14 + th + pad
  return {"size": (W, H), "grid": (left, top, cell), "bar": bar}


def _index_labels(cv: Canvas, rows: int, cols: int, grid, scale: int) -> None:
  """Ticks and labels at every few cell centres: column offsets above the grid, row start indices to its left."""
  x0, y0, cell = grid
  cstep = label_step(cols, cell, text_size(str(cols - 1), scale)[0])
  for c in range(0, cols, cstep):
    cx = x0 + c * cell + cell // 2
    cv.line(cx, y0 - 5, cx, y0 - 2, FRAME)
    cv.text(cx + 1, y0 - 8, str(c), INK, scale, "cb")
  rstep = label_step(rows, cell, CAP_H * scale)
  for r in range(0, rows, rstep):
    cy = y0 + r * cell + cell // 2
    cv.line(x0 - 5, cy, x0 - 2, cy, FRAME)
    cv.text(x0 - 8, cy, str(r * cols), INK, scale, "rm")


def _colour_bar(cv: Canvas, bar, vmax: float, cmap, scale: int) -> tuple[int, int, int, int]:
  """The map from +1 (top) to -1 (bottom), the same cmap as the cells, labelled +vmax, 0, -vmax; returns the
  labels' bounding box."""
  bx0, by0, bx1, by1 = bar
  v = np.linspace(1.0, -1.0, by1 - by0 + 1)
  cv.pixels[by0:by1 + 1, bx0:bx1 + 1] = cmap(v)[:, None, :]
  cv.rect(bx0 - 1, by0 - 1, bx1 + 1, by1 + 1, FRAME, fill=False)
  boxes = []
  for s, y in zip(_scale_labels(vmax), (by0, (by0 + by1) // 2, by1)):
    cv.line(bx1 + 2, y, bx1 + 5, y, FRAME)
    boxes.append(cv.text(bx1 + 9, y, s, INK, scale, "lm"))
  return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)

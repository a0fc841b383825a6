"""plot_png (PNG writer, bitmap text, scatter plot) and bench/'s `plot` / `fidelity` subcommands, on tiny inputs."""
import json, math, struct, subprocess, sys, zlib

import numpy as np
import pytest
from conftest import ROOT

from bench import speed as bench

from bench.__main__ import main as bench_main
from studentz_runtime import plot_png as pp


def read_png(data: bytes) -> np.ndarray:
  """Decode the PNGs plot_png writes (8-bit RGB, filter 0) with checks on every chunk's CRC; (H, W, 3) uint8."""
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  pos, idat, size = 8, b"", None
  while pos < len(data):
    n, kind = struct.unpack(">I", data[pos:pos + 4])[0], data[pos + 4:pos + 8]
    body = data[pos + 8:pos + 8 + n]
    assert zlib.crc32(kind + body) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0], kind
    if kind == b"IHDR":
      assert pos == 8 and n == 13
      w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
      assert (depth, ctype, interlace) == (8, 2, 0)
      size = (w, h)
    elif kind == b"IDAT": idat += body
    pos += 12 + n
    if kind == b"IEND": break
  assert pos == len(data) and size is not None
  w, h = size
  raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
  assert (raw[:, 0] == 0).all()  # filter type 0 on every scanline
  return raw[:, 1:].reshape(h, w, 3)


def test_encode_png_round_trip_and_pillow_if_present(tmp_path):
  img = np.random.default_rng(0).integers(0, 256, (7, 11, 3)).astype(np.uint8)
  data = pp.encode_png(img)
  assert struct.unpack(">II", data[16:24]) == (11, 7)
  assert (read_png(data) == img).all()
  with pytest.raises(ValueError): pp.encode_png(np.zeros((4, 4), np.uint8))
  try: from PIL import Image
  except ImportError: return  # optional extra check; Pillow is not a dependency
  pp.write_png(tmp_path / "a.png", img)
  assert (np.asarray(Image.open(tmp_path / "a.png").convert("RGB")) == img).all()


def test_font_and_text_box():
  for c in map(chr, range(32, 127)): assert c in pp.FONT, c  # all printable ASCII
  assert pp.text_size("ab", 2) == (22, 18)  # two 5-pixel glyphs, one pixel apart, 9 rows; doubled
  cv = pp.Canvas(60, 30)
  box = cv.text(5, 4, "x=1%", (255, 0, 0), scale=1)
  assert box == (5, 4, 5 + 23, 4 + 9)
  red = np.argwhere((cv.pixels == (255, 0, 0)).all(-1))
  assert len(red) > 10 and red[:, 0].min() >= 4 and red[:, 0].max() < 13
  assert red[:, 1].min() >= 5 and red[:, 1].max() < 28
  assert (pp.text_mask("\u00e9") == pp.text_mask("?")).all()  # outside the table: '?' rather than nothing


def test_ticks():
  assert pp.log_ticks(3, 700) == [5, 10, 20, 50, 100, 200, 500]
  assert pp.log_ticks(0.5, 2e6) == [1, 10, 100, 1e3, 1e4, 1e5, 1e6]  # > 4 decades: powers of 10 only
  assert len(pp.log_ticks(2.1, 4.9)) >= 2  # narrow: integer multiples
  ticks, step = pp.linear_ticks(0.55, 1.05)
  assert step == 0.1 and [pp.fmt_linear(t, step) for t in ticks] == ["0.6", "0.7", "0.8", "0.9", "1.0"]
  assert [pp.fmt_count(v) for v in (0.5, 20, 1000, 2500, 1e6)] == ["0.5", "20", "1k", "2.5k", "1M"]


def test_scatter_points_land_where_the_axes_say(tmp_path):
  pts = [{"x": 10, "y": 0.1, "label": "a", "group": "student"}, {"x": 100, "y": 0.2, "label": "b", "group": "student"},
         {"x": 1000, "y": 0.3, "label": "c", "group": "student"},
         {"x": 300, "y": 0.25, "label": "the teacher", "group": "teacher"}]
  out = tmp_path / "p.png"
  lay = pp.scatter_plot(pts, out, "t", "sentences/s", "fidelity", size=(480, 320), scale=1)
  img = read_png(out.read_bytes())
  assert img.shape == (320, 480, 3) and lay["size"] == (480, 320)
  (ax, ay), (bx, by), (cx, cy) = lay["points"][:3]
  # log x: each decade is the same width; linear y: equal steps are equal heights; higher y is higher up
  assert abs((bx - ax) - (cx - bx)) < 1e-6 and abs((ay - by) - (by - cy)) < 1e-6 and cy < by < ay and ax < bx < cx
  x0, y0, x1, y1 = lay["plot_area"]
  for (px, py), p in zip(lay["points"], pts):
    assert x0 < px < x1 and y0 < py < y1
    color = lay["styles"][p["group"]][0]
    win = img[int(py) - 6:int(py) + 7, int(px) - 6:int(px) + 7]
    hit = np.argwhere((win == color).all(-1))
    assert len(hit) >= 9, p  # the marker's fill colour is there...
    assert np.abs(hit.mean(0) - (py - int(py) + 6, px - int(px) + 6)).max() < 1.0, p  # ...centred on the point
  assert lay["styles"]["student"][0] != lay["styles"]["teacher"][0]
  with pytest.raises(ValueError, match="log axis"): pp.scatter_plot([{"x": 0, "y": 1}], out, "t", "x", "y")
  with pytest.raises(ValueError, match="finite y"): pp.scatter_plot([{"x": 1, "y": math.nan}], out, "t", "x", "y")
  with pytest.raises(ValueError, match="no points"): pp.scatter_plot([], out, "t", "x", "y")


def test_fit_text_cuts_with_dots():
  assert pp.fit_text("short", 100, 2) == "short" and pp.fit_text("a\n b\t c", 200) == "a b c"
  cut = pp.fit_text("word " * 50, 200, 2)
  assert cut == "word word wor..." and pp.text_size(cut, 2)[0] <= 200 < pp.text_size(cut + "x", 2)[0]


def test_infer_png_is_a_labelled_heatmap_with_a_colour_bar():
  """infer.py --png: decodes, default size, cells as the terminal map colours them, bar from low to high, text."""
  import infer
  z = np.random.default_rng(0).standard_normal(384).astype(np.float32) * 0.05
  z[101] = -0.5  # the largest |z|, negative: its cell is the low end of the map
  cv, lay = infer.heatmap_figure(z, "A man is playing a guitar on stage while the crowd sings along. " * 3)
  img = read_png(infer.png_bytes(z, "A man is playing a guitar on stage while the crowd sings along. " * 3))
  assert img.shape == (368, 694, 3) and lay["size"] == (694, 368) and (img == cv.pixels).all()
  x0, y0, cell = lay["grid"]
  assert cell >= 12
  cells = img[y0:y0 + 16 * cell, x0:x0 + 24 * cell]
  assert (cells == np.repeat(np.repeat(infer.rgb(infer._scaled(z)), cell, 0), cell, 1)).all()
  r, c = divmod(101, 24)
  assert (img[y0 + r * cell + cell // 2, x0 + c * cell + cell // 2] == infer.COLD).all()
  bx0, by0, bx1, by1 = lay["bar"]
  bar = img[by0:by1 + 1, (bx0 + bx1) // 2].astype(int)[::-1]  # bottom to top
  assert (bar[0] == infer.COLD).all() and (bar[-1] == infer.HOT).all() and len(bar) >= 100
  assert (bar == infer.rgb(np.linspace(-1, 1, len(bar)))).all()  # the very map the cells use, -1 at the bottom
  # in order COLD -> MID -> HOT: along HOT - COLD each 16-pixel stretch up the bar lies further than the one below
  # (single pixels may step back by a channel's rounding)
  steps = (bar[:len(bar) // 16 * 16] @ (infer.HOT - infer.COLD)).reshape(-1, 16).mean(1)
  assert (np.diff(steps) > 0).all()
  mid = bar[len(bar) // 2]
  assert np.abs(mid - infer.MID).max() <= 3  # near-white at 0, halfway up

  def ink(box):
    a, b, c2, d = box
    return int((img[b:d, a:c2].max(-1) < 100).sum())
  assert ink(lay["title"]) > 100 and ink(lay["bar_labels"]) > 60
  assert lay["title"][2] <= img.shape[1] and lay["bar_labels"][2] <= img.shape[1]
  H, W = img.shape[:2]
  assert ink((0, H - 12 - pp.GLYPH_H * 2, W, H)) > 100  # the footer


def fid(name, kind, sps, **kw):
  return {"bench": "fidelity", "name": name, "kind": kind, "sentences_per_s": sps, "card": "Test GPU", "L": 128,
          "B": 128, **kw}


def test_bench_plot_picks_stsb_and_merges_eval_json(tmp_path, capsys):
  rows = [fid("a/best", "student", 1300.0, stsb_spearman=None, val_cos=0.7, ckpt="runs/a/best"),
          fid("MiniLM", "teacher", 1600.0, stsb_spearman=82.0, val_cos=1.0),
          {"bench": "teacher_encode", "L": 32}]  # other bench rows in the same file are skipped
  (tmp_path / "rows.json").write_text(json.dumps(rows))
  png = tmp_path / "out.png"
  assert bench_main(["plot", "--from", str(tmp_path / "rows.json"), "--png", str(png)]) == 0
  assert "y = val_cos" in capsys.readouterr().err  # the student has no STS-B yet: both use val_cos
  assert read_png(png.read_bytes()).shape == (640, 960, 3)
  (tmp_path / "eval.json").write_text(json.dumps({"checkpoint": "runs/a/best", "val_cos": 0.73, "stsb_spearman": 64.1,
                                                  "teacher_stsb_spearman": 82.0}))
  assert bench_main(["plot", "--from", str(tmp_path / "rows.json"), str(tmp_path / "eval.json"), "--png", str(png),
                     "--title", "speed vs fidelity"]) == 0
  assert "2 points, y = stsb_spearman" in capsys.readouterr().err
  assert bench_main(["plot", "--from", str(tmp_path / "rows.json"), "--png", str(png), "--y", "val_cos"]) == 0


@pytest.mark.parametrize("content, msg", [
  ("[]", "no fidelity rows"),
  ('[{"bench": "teacher_encode", "L": 32}]', "no fidelity rows"),
  (json.dumps([fid("a", "student", None, val_cos=0.5)]), "lacks sentences_per_s"),
  (json.dumps([fid("a", "student", 0, val_cos=0.5)]), "need a positive number"),
  (json.dumps([{"bench": "fidelity", "kind": "student", "sentences_per_s": 5, "val_cos": 0.5}]), "lacks name"),
  (json.dumps([fid("a", "student", 10.0)]), "neither stsb_spearman nor val_cos"),
  ("{not json", "neither JSON nor JSON lines"),
  ("[1, 2]", "expected JSON objects"),
])
def test_bench_plot_bad_input_one_line_exit_2(tmp_path, capsys, content, msg):
  (tmp_path / "r.json").write_text(content)
  assert bench_main(["plot", "--from", str(tmp_path / "r.json"), "--png", str(tmp_path / "o.png")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and msg in err[0], err
  assert not (tmp_path / "o.png").exists()


def test_bench_plot_subprocess_missing_file_and_field(tmp_path):
  (tmp_path / "r.json").write_text(json.dumps([fid("a", "student", 10.0, val_cos=0.5)]))
  for argv, msg in [(["--from", str(tmp_path / "none.json")], "cannot read"),
                    (["--from", str(tmp_path / "r.json"), "--y", "stsb_spearman"], "has no stsb_spearman")]:
    p = subprocess.run([sys.executable, "-m", "bench", "plot", *argv, "--png", str(tmp_path / "o.png")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], lines


def test_bench_fidelity_rows_then_plot(tmp_path, capsys, monkeypatch):
  """A tiny untrained checkpoint and a stand-in teacher (the real one costs minutes on this CPU): the row format."""
  import studentz as sz
  import teacher
  from conftest import write_checkpoint
  from studentz_corpus.tokenizer import StudentTokenizer
  tok = StudentTokenizer.fit(["a small corpus for the tokenizer", "another line of text"] * 5, vocab_size=260)
  cfg = sz.Config(vocab_size=tok.vocab_size, d_model=8, hidden=8, n_blocks=1, dilation_schedule=[1], kernel_size=3,
                  proj_dim=8, max_len=8).validate()
  ck = tmp_path / "run" / "best"
  write_checkpoint(ck, cfg, {"encoder": sz.Encoder(cfg)}, tok, teacher_name="fake-teacher")
  info = json.loads((ck / "config.json").read_text())
  (ck / "config.json").write_text(json.dumps({**info, "metrics": {"val_cos": 0.42}}))

  class FakeTeacher:
    name, dim, max_seq_length = "fake-teacher", 8, 64
    def embed(self, texts, batch_size=64): return np.ones((len(texts), 8), np.float32)
  monkeypatch.setattr(teacher, "load_teacher", lambda name: FakeTeacher())
  ev = tmp_path / "eval.json"
  ev.write_text(json.dumps({"checkpoint": str(ck), "teacher": "fake-teacher", "val_cos": 0.5, "stsb_spearman": 30.0,
                            "teacher_stsb_spearman": 80.0}))
  out = tmp_path / "fid.json"
  common = ["fidelity", "--ckpt", str(ck), "--len", "8", "--batch", "2", "--teacher-n", "2", "--reps-teacher", "1",
            "--teacher", "fake-teacher", "--json", str(out)]
  assert bench_main(common) == 0
  student, teach = json.loads(out.read_text())
  assert student["kind"] == "student" and student["name"] == "run/best" and student["sentences_per_s"] > 0
  assert student["val_cos"] == 0.42 and student["val_cos_source"].endswith("config.json")
  assert student["stsb_spearman"] is None and student["L"] == 8 and student["B"] == 2
  assert teach["kind"] == "teacher" and teach["val_cos"] == 1.0 and teach["sentences_per_s"] > 0
  assert bench_main([*common, "--eval", str(ev)]) == 0
  student, teach = json.loads(out.read_text())
  assert (student["val_cos"], student["stsb_spearman"], teach["stsb_spearman"]) == (0.5, 30.0, 80.0)
  assert student["stsb_spearman_source"] == teach["stsb_spearman_source"] == str(ev)
  capsys.readouterr()
  png = tmp_path / "f.png"
  assert bench_main(["plot", "--from", str(out), "--png", str(png)]) == 0
  assert "y = stsb_spearman" in capsys.readouterr().err and read_png(png.read_bytes()).shape == (640, 960, 3)
  # one --eval per --ckpt; a missing checkpoint: one line, exit 2
  for argv, msg in [([*common, "--eval", str(ev), str(ev)], "one `train.py --eval --json` file per --ckpt"),
                    ([*common[:2], str(tmp_path / "nope"), *common[3:]], "checkpoint not found")]:
    assert bench_main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and msg in err[0], err

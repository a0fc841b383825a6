"""Issue 33's CPU throughput from text at L=128: the student against its teacher on PyTorch and on ONNX Runtime int8.

  python scripts/cpu_throughput.py         # writes results/cpu_throughput.json and prints each figure

One process, side by side: (a) the student on the numpy engine (numpy_infer.py, the default on a CPU), float weights
and int8 ones (int8 GEMMs on int8_gemm.py's kernel where the CPU has one: `student_int8_kernel`); (b)
sentence-transformers all-MiniLM-L6-v2 on PyTorch fp32, built from the local teacher folder (Transformer + mean
Pooling + Normalize, no model hub); (c) the same teacher exported with torch.onnx, quantised by
onnxruntime.quantization.quantize_dynamic (int8 weights, per output channel) and run by ONNX Runtime, mean pooling in
numpy. Texts: held-out Wikipedia sentences (the corpus's test split) joined into passages of at least 128 tokens in
both tokenizers, so every engine cuts every text to exactly 128 tokens, specials included. Each engine tokenizes
inside the timed call, uses the same batch size and 2 threads; after an untimed warm-up the engines run in turns,
each for --seconds per round, and a figure is the median over rounds (load on this shared CPU falls on all alike).
The baselines' idle threads sleep rather than spin (their faster setting on a busy CPU).
Needs the `bench` extra (pip install -e .[bench]).
"""
from __future__ import annotations
import os

THREADS = 2
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"): os.environ.setdefault(var, str(THREADS))
# idle OpenMP threads (PyTorch's) sleep instead of spinning: spinning takes the core a busy shared CPU needs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse, json, platform, statistics, sys, tempfile, time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEACHER = "all-MiniLM-L6-v2"


def passages(n: int, length: int, token_counts) -> list[str]:
  """n passages of consecutive held-out sentences, each at least `length` tokens under every token counter."""
  from studentz_corpus import prepare as corpus
  from train import default_corpus
  out, cur = [], []
  for sent, split in corpus.build_sentences(default_corpus()):
    if split not in (2, "test"): continue
    cur.append(sent)
    text = " ".join(cur)
    if all(count(text) >= length for count in token_counts):
      out.append(text)
      cur = []
      if len(out) == n: return out
  raise RuntimeError(f"the corpus's test split gave only {len(out)} passages of {length} tokens")


def student_engine(ckpt: Path, int8: bool, length: int, batch: int):
  from studentz_runtime import numpy_infer
  models, _, tok = numpy_infer.load_models(ckpt, decoder=False, int8=int8)

  def encode(texts):
    ids, mask = tok.encode_batch(texts, length)
    return numpy_infer.encode_batches(models["encoder"], ids, mask, batch)
  return encode, tok


def sentence_transformers_engine(folder: Path, length: int, batch: int):
  import torch
  try: from sentence_transformers.sentence_transformer import modules
  except ImportError: from sentence_transformers import models as modules
  from sentence_transformers import SentenceTransformer
  torch.set_num_threads(THREADS)
  tr = modules.Transformer(str(folder), max_seq_length=length)
  st = SentenceTransformer(modules=[tr, modules.Pooling(tr.get_word_embedding_dimension(), "mean"),
                                    modules.Normalize()], device="cpu")
  return lambda texts: st.encode(texts, batch_size=batch, convert_to_numpy=True)


def export_onnx_int8(folder: Path, out_dir: Path) -> Path:
  """The teacher's transformer as ONNX (ids, mask -> last hidden state), then its int8 dynamic quantisation."""
  import torch
  from onnxruntime.quantization import QuantType, quantize_dynamic
  from transformers import AutoModel
  model = AutoModel.from_pretrained(str(folder)).eval()

  class Hidden(torch.nn.Module):  # keyword arguments: the exporter passes inputs by position
    def __init__(self): super().__init__(); self.m = model
    def forward(self, ids, mask): return self.m(input_ids=ids, attention_mask=mask).last_hidden_state

  ids = torch.ones(2, 16, dtype=torch.long)
  axes = {"input_ids": {0: "batch", 1: "len"}, "attention_mask": {0: "batch", 1: "len"},
          "hidden": {0: "batch", 1: "len"}}
  fp32, int8 = out_dir / "teacher.onnx", out_dir / "teacher_int8.onnx"
  torch.onnx.export(Hidden(), (ids, torch.ones_like(ids)), str(fp32), input_names=["input_ids", "attention_mask"],
                    output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False)
  # per output channel: one scale per matrix drops its vectors' cosine to fp32's to ~0.93 on these texts
  quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
  return int8


def onnx_engine(folder: Path, model_path: Path, length: int, batch: int):
  import onnxruntime as ort
  from tokenizers import Tokenizer
  tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
  tok.enable_truncation(length)
  tok.enable_padding(pad_id=0)
  opts = ort.SessionOptions()
  opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
  # its threads sleep between calls: spinning made it ~1.4x slower on this shared 2-core CPU under load
  opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
  sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])

  def encode(texts):
    out = []
    for i in range(0, len(texts), batch):
      enc = tok.encode_batch(texts[i:i + batch])
      ids = np.array([e.ids for e in enc], np.int64)
      mask = np.array([e.attention_mask for e in enc], np.int64)
      h = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
      m = mask[..., None].astype(np.float32)
      v = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
      out.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
    return np.concatenate(out)
  return encode


def rate(encode, texts: list[str], seconds: float) -> float:
  """Sentences per second over whole passes of `texts` for at least `seconds`."""
  n, t0 = 0, time.perf_counter()
  while True:
    encode(texts)
    n += len(texts)
    if (dt := time.perf_counter() - t0) >= seconds: return n / dt


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def build_engines(args, tmp: Path):
  from teacher.hub import resolve
  folder = Path(resolve(TEACHER))
  student, tok = student_engine(args.ckpt, False, args.len, args.batch)
  engines = {"student_numpy": student, "student_numpy_int8": student_engine(args.ckpt, True, args.len, args.batch)[0],
             "sentence_transformers_torch_fp32": sentence_transformers_engine(folder, args.len, args.batch),
             "onnxruntime_int8": onnx_engine(folder, export_onnx_int8(folder, tmp), args.len, args.batch)}
  from tokenizers import Tokenizer
  ttok = Tokenizer.from_file(str(folder / "tokenizer.json"))
  ttok.no_truncation()
  counters = [lambda t: len(tok.backend.encode(t, add_special_tokens=False).ids) + 2,
              lambda t: len(ttok.encode(t).ids)]
  return engines, counters


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ckpt", type=Path, default=ROOT / "models" / "default", help="the student's checkpoint folder")
  p.add_argument("--len", type=int, default=128, help="tokens per text, specials included (every engine)")
  p.add_argument("--batch", type=int, default=32, help="texts per batch (every engine)")
  p.add_argument("--n", type=int, default=128, help="texts per timed pass")
  p.add_argument("--seconds", type=float, default=4.0, help="seconds per engine per round")
  p.add_argument("--rounds", type=int, default=3, help="rounds of turns (figures are medians over them)")
  p.add_argument("--json", type=Path, default=ROOT / "results" / "cpu_throughput.json", help="results file")
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    engines, counters = build_engines(args, Path(tmp))
    texts = passages(args.n, args.len, counters)
    z = {name: enc(texts) for name, enc in engines.items()}  # also the warm-up
    rates = {name: [] for name in engines}
    load_start = os.getloadavg()[0]
    for _ in range(args.rounds):
      for name, enc in engines.items(): rates[name].append(rate(enc, texts, args.seconds))
  from studentz_runtime import int8_gemm
  out = {"command": " ".join(["python scripts/cpu_throughput.py", *sys.argv[1:]]),
         "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "threads": THREADS,
         "student_int8_kernel": int8_gemm.lib() is not None,
         "texts": len(texts), "tokens_per_text": args.len, "batch": args.batch, "rounds": args.rounds,
         "seconds_per_round": args.seconds, "load_average_1min": [load_start, os.getloadavg()[0]],
         "sentences_per_s": {k: statistics.median(v) for k, v in rates.items()},
         "sentences_per_s_rounds": rates}
  st, ort_int8 = out["sentences_per_s"]["sentence_transformers_torch_fp32"], out["sentences_per_s"]["onnxruntime_int8"]
  for k in ("student_numpy", "student_numpy_int8"):
    out[f"{k}_vs_sentence_transformers"] = out["sentences_per_s"][k] / st
    out[f"{k}_vs_onnxruntime_int8"] = out["sentences_per_s"][k] / ort_int8
  out["cos_onnx_int8_to_torch_fp32_mean"] = float(cosine(z["onnxruntime_int8"],
                                                         z["sentence_transformers_torch_fp32"]).mean())
  out["cos_student_int8_to_float_mean"] = float(cosine(z["student_numpy_int8"], z["student_numpy"]).mean())
  for k, v in out["sentences_per_s"].items(): print(f"{k}: {v:.1f} sentences/s")
  args.json.write_text(json.dumps(out, indent=1) + "\n")
  print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

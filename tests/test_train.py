"""Training end to end: overfitting a tiny student, exact resume (Ctrl-C and SIGKILL), the train.py CLI, checkpoints.

Every new tinygrad shape costs seconds of clang compile on a 2-core CPU, so the file uses two tiny configs only: one
student (vocab 300, d 32, hidden 48, 2 blocks, L 24, B 20, D 24) trained directly with studentz.Trainer (dropout 0), and
the same student with dropout 0.2 for every train.main run. Their eval-mode forward kernels are shared. The teacher is a
fake one (a fixed random unit vector per sentence): the real MiniLM does ~15 sentences/s on this CPU.
"""
import hashlib, json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA
from studentz_training import heldout
from studentz_training.trainer import Trainer
import train
from studentz_corpus import prepare as corpus
from studentz_runtime import metrics
import studentz as sz
from studentz_corpus.tokenizer import StudentTokenizer
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_state_dict

WIKI = SHARED_DATA / "wikipedia" / "enwiki-docs.jsonl.gz"
STSB_TRAIN = SHARED_DATA / "stsb" / "sts-train.csv"
D, VOCAB, MAX_LEN, BATCH = 24, 300, 24, 20
N_SENT = 2000  # enough for >10 test-split rows (1% hash split), so --eval reports a retrieval P@10
TINY = dict(vocab_size=VOCAB, d_model=32, hidden=48, n_blocks=2, dilation_schedule=[1, 2], kernel_size=3,
            max_len=MAX_LEN, batch_size=BATCH, proj_dim=D)
RUN_STEPS, INTERRUPT_AT = 12, 6
# what a train.main run reads from --config: the tiny student, dropout > 0 so resume must restore the RNG, evaluation
# every 4 steps so the interruption at step 6 falls between two evaluations
RUN_CFG = dict(TINY, dropout=0.2, steps=RUN_STEPS, eval_every=4, log_every=1, warmup_steps=3, data_limit=N_SENT,
               pool_head=16,  # the head is in both profiles' defaults: tiny here rather than the GPU's 1024
               decoder_share=0)  # the encoder alone; test_two_stage runs the profiles' decoder stage


def hash_vector(t: str) -> np.ndarray:
  return np.random.default_rng(list(hashlib.sha256(t.encode()).digest()[:8])).standard_normal(D).astype(np.float32)


class FakeTeacher:
  """A fixed random unit vector per sentence, seeded by the sentence's hash: identical in every process. Its token
  vectors ([CLS], one per whitespace word, [SEP]; fixed per word) are not those its sentence vectors average, which
  train.py never checks: they only give the profile's token targets (token_targets.py tests their alignment)."""
  name, dim, fingerprint, max_seq_length, pooling = "fake-teacher", D, "fa7e" * 16, 128, ("mean",)

  def embed(self, texts, batch_size=64, **_):
    out = np.stack([hash_vector(t) for t in texts])
    return out / np.linalg.norm(out, axis=1, keepdims=True)

  def token_vectors(self, texts, batch_size=64):
    out = []
    for t in texts:
      spans = [m.span() for m in re.finditer(r"\S+", t)]
      h = np.stack([hash_vector(w) for w in ["[CLS]", *(t[a:b] for a, b in spans), "[SEP]"]])
      out.append((h, [(0, 0), *spans, (0, 0)], [1] + [0] * len(spans) + [1]))
    return out


def fake_teacher(name): return FakeTeacher()


def unit_rows(n: int, seed: int) -> np.ndarray:
  v = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
  return v / np.linalg.norm(v, axis=1, keepdims=True)


def encoder_state(enc) -> dict:
  return {f"encoder.{k}": v for k, v in get_state_dict(enc).items()}


# ---------------------------------------------------------------------------------------------------------------------
# the tiny student, trained directly


@pytest.fixture(scope="module")
def sentences():
  """(cfg, ids, mask) of 100 real STS-B sentences under a student tokenizer fitted on them."""
  s1, _, _ = metrics.load_stsb(STSB_TRAIN)
  texts = list(dict.fromkeys(s1))[:100]
  tok = StudentTokenizer.fit(texts, vocab_size=VOCAB)
  ids, mask = tok.encode_batch(texts, MAX_LEN)
  cfg = sz.Config(**TINY, dropout=0.0, steps=300, warmup_steps=10, optimizer={"type": "adamw", "lr": 3e-3})
  return cfg.validate(), ids.astype(np.int32), mask.astype(np.float32)


def test_overfits_100_sentences(sentences):
  cfg, ids, mask = sentences
  target = unit_rows(len(ids), seed=0)  # fixed teacher vectors: nothing to generalise, everything to memorise
  Tensor.manual_seed(0)
  enc = sz.Encoder(cfg)
  trainer = Trainer(cfg, {"encoder": enc}, sz.distill_loss_fn)
  order, losses = np.random.default_rng(0), []
  while len(losses) < cfg.steps:
    perm = order.permutation(len(ids))
    for b in perm.reshape(-1, BATCH):
      if len(losses) == cfg.steps: break
      losses.append(trainer.step({"tokens": ids[b], "mask": mask[b], "teacher": target[b]})["loss"])
  z = train.encode_ids(enc, ids, mask, cfg.batch_size)
  cos = (z * target).sum(1) / np.linalg.norm(z, axis=1)
  assert np.isfinite(losses).all() and losses[-1] < losses[0] / 10
  assert cos.mean() >= 0.95, f"mean cos {cos.mean():.3f} (min {cos.min():.3f}) after {cfg.steps} steps"


def test_the_schedule_length_changes_between_jit_replays(sentences, monkeypatch):
  """Trainer.set_total_steps (train.py --minutes) moves the cosine schedule's end for the next step, though the
  step is a JIT replay: the LR read back is lr_at's with the new length, not the captured one's. The capture makes one
  graph of the whole step (trainer.STEP_GRAPH_BATCH: on CUDA, tinygrad's split into graphs of 32, 64, ... kernels
  slowed queued steps)."""
  import tinygrad.engine.jit as jit
  split, batches = jit.graph_split_rewrite, []
  monkeypatch.setattr(jit, "graph_split_rewrite", lambda lin, max_batch_size=0: batches.append(max_batch_size) or
                      split(lin, max_batch_size))
  cfg, ids, mask = sentences
  Tensor.manual_seed(0)
  trainer = Trainer(cfg, {"encoder": sz.Encoder(cfg)}, sz.distill_loss_fn)
  batch = {"tokens": ids[:BATCH], "mask": mask[:BATCH], "teacher": unit_rows(BATCH, seed=1)}
  for _ in range(12): lr_long = trainer.step(batch)["lr"]  # warmup_steps 10: past it, JIT captured and replaying
  assert batches == [0]
  trainer.set_total_steps(15)
  lr_short = trainer.step(batch)["lr"]
  want = sz.lr_at(Tensor([12]), cfg, Tensor([15.0])).item()
  assert lr_short == pytest.approx(want, rel=1e-5) and lr_short < 0.8 * lr_long, (lr_short, want, lr_long)


def test_profiles_fill_what_the_user_left_unset():
  """The GPU profile adds the pool head and token targets and turns dropout off, the CPU profile its own sizes, each
  entry only where the user named neither it nor its whole dict, and never one that clashes with the user's choices
  (a decoder's ce)."""
  def cfg_of(*argv, profile="full"):
    _, args, overrides = train.parse_args(["--profile", profile, *argv])
    return train.resolve_config(args, overrides, "CPU")[0], args.profile_set
  cfg, applied = cfg_of()
  assert (cfg.pool_head, cfg.loss_weights["tok"], cfg.dropout) == (1024, 0.25, 0.0)
  assert applied == ["pool_head", "loss_weights.tok", "dropout", "decoder_share"]
  assert cfg_of("--dropout", "0.2")[0].dropout == 0.2
  assert cfg_of("--loss_weights.sem", "0")[0].loss_weights == {"cos": 1.0, "mse": 1.0, "ce": 0.0, "sem": 0, "tok": 0.25,
                                                               "cycle": 0.0}
  assert cfg_of("--loss_weights", '{"cos": 1}')[0].loss_weights["tok"] == 0.0      # the whole dict: the user's
  assert cfg_of("--loss_weights.tok", "0")[0].loss_weights["tok"] == 0
  cfg, applied = cfg_of("--loss_weights.ce", "1", "--pool_head", "0")
  assert (cfg.pool_head, cfg.loss_weights["tok"], applied) == (0, 0.0, [])        # tok with ce would be refused,
  assert cfg.dropout == 0.1                                                       # and a decoder keeps its dropout
  cfg, _ = cfg_of(profile="cpu")
  assert (cfg.pool_head, cfg.loss_weights["tok"], cfg.d_model, cfg.n_blocks, cfg.dilation_schedule) == \
    (384, 0.25, 96, 4, [1, 2, 4, 8])                                               # entries that only fit together
  cfg, applied = cfg_of("--loss_weights.ce", "1", profile="cpu")
  assert (cfg.n_blocks, cfg.loss_weights["tok"]) == (4, 0.0) and "loss_weights.tok" not in applied


def test_token_targets_from_a_teacher_without_token_vectors(tmp_path, monkeypatch, capsys):
  """Asked for by the user: a one-line error before any data work. (Set only by the profile: a note, then training
  without them.)"""
  class Plain(FakeTeacher): token_vectors = None
  monkeypatch.setattr(heldout, "load_teacher", lambda name: Plain())
  with pytest.raises(SystemExit) as e:
    train.main(["--loss_weights.tok", "1", "--out", str(tmp_path / "a"), "--data-source", str(tmp_path)])
  assert e.value.code == 2
  assert "loss_weights.tok: teacher fake-teacher gives no token vectors" in capsys.readouterr().err
  assert not (tmp_path / "a").exists()


def test_step_planner_fits_the_budget():
  """StepPlanner on a fake clock: nothing until the first steps have settled and enough time has passed, then the
  step count that fills the rest of the budget at the measured rate (minus its margin); small changes are ignored."""
  now = [0.0]
  p = train.StepPlanner(10, start_step=0, clock=lambda: now[0])  # 600 s
  now[0] = 30.0
  assert p.plan(20, 1000) is None            # settled at step 20 (JIT capture before it): measured from here
  now[0] = 35.0
  assert p.plan(70, 1000) is None            # 50 steps in 5 s: too little to trust
  now[0] = 50.0
  got = p.plan(220, 1000)                    # 200 steps in 20 s: 10 steps/s, 550 s left
  assert got == 220 + int(550 * 10 * 0.97)
  now[0] = 60.0
  assert p.plan(320, got) is None            # the same rate: within 2% of the plan, kept
  now[0] = 700.0
  assert p.plan(330, got) == 331             # past the budget: end at the next step


def test_step_planner_leaves_a_discounted_pause_out_of_the_rate():
  """A one-off 10-s pause (the first validation's compile) would make 10 steps/s look like 5; discounted, the plan is
  the one without it, while the budget still counts the 10 s."""
  def planner_after(pause: float, discount: bool):
    now = [0.0]
    p = train.StepPlanner(10, start_step=0, clock=lambda: now[0])
    now[0] = 30.0
    p.plan(20, 1000)
    now[0] = 35.0
    p.plan(70, 1000)
    if discount: p.discount(pause)           # a pause between two syncs, inside the window the rate is taken over
    now[0] = 50.0 + pause
    return p.plan(220, 1000)
  left = 600 - 50 - 10
  assert planner_after(10.0, True) == 220 + int(left * 10 * 0.97)
  assert planner_after(10.0, False) < 220 + int(left * 7 * 0.97)


def test_fp16_checkpoint_loads_into_fp32_model(sentences, tmp_path):
  cfg, ids, mask = sentences
  ids, mask = ids[:BATCH], mask[:BATCH]
  Tensor.manual_seed(1)
  enc = sz.Encoder(cfg)
  ref = train.encode_ids(enc, ids, mask, cfg.batch_size)
  path = tmp_path / "model.safetensors"
  sz.save_tensors(path, encoder_state(enc), dtype=dtypes.float16)
  arrays = sz.load_tensors(path)
  assert {a.dtype for a in arrays.values()} == {np.dtype(np.float16)}  # every encoder tensor is a float
  Tensor.manual_seed(2)
  other = sz.Encoder(cfg)
  assert not np.allclose(train.encode_ids(other, ids, mask, cfg.batch_size), ref, atol=1e-3)
  sz.assign_state(other, arrays, prefix="encoder.")
  assert {t.dtype for t in get_state_dict(other).values()} == {dtypes.float32}  # the model keeps its own dtype
  out = train.encode_ids(other, ids, mask, cfg.batch_size)
  rel = np.linalg.norm(out - ref, axis=1) / np.linalg.norm(ref, axis=1)
  assert rel.max() < 1e-2, f"fp16 round trip moved z by {rel.max():.2e} (relative)"


@pytest.mark.parametrize("what", ["vocab", "proj_dim"])
def test_checkpoint_of_another_config_is_refused(sentences, tmp_path, what):
  cfg, _, _ = sentences
  Tensor.manual_seed(3)
  enc = sz.Encoder(cfg)
  arrays = {k: v.numpy() for k, v in encoder_state(enc).items()}
  before = {k: a.copy() for k, a in arrays.items()}
  # what a checkpoint of a model with 16 more tokens, or a teacher 8 dimensions wider, holds
  if what == "vocab":
    arrays["encoder.embed.weight"] = np.zeros((VOCAB + 16, cfg.d_model), np.float16)
    name, shape = "embed.weight", (VOCAB + 16, cfg.d_model)
  else:
    arrays["encoder.proj.weight"] = np.zeros((D + 8, cfg.d_model), np.float16)
    arrays["encoder.proj.bias"] = np.zeros((D + 8,), np.float16)
    name, shape = "proj.weight", (D + 8, cfg.d_model)
  from safetensors.numpy import save_file
  save_file(arrays, str(tmp_path / "model.safetensors"))
  with pytest.raises(sz.CheckpointError, match="shape") as e:
    sz.assign_state(enc, sz.load_tensors(tmp_path / "model.safetensors"), prefix="encoder.")
  assert name in str(e.value) and str(shape) in str(e.value), str(e.value)
  after = {k: v.numpy() for k, v in encoder_state(enc).items()}
  assert all(np.array_equal(after[k], before[k]) for k in before), "a refused checkpoint must leave the model alone"


# ---------------------------------------------------------------------------------------------------------------------
# train.main on a prepared data folder


def make_work(base: Path) -> dict:
  """A text corpus (not the default one, so resume must find it by itself), its data folder with the fake teacher's
  vectors, and the run config file (the session's `work` fixture, tests/conftest.py: shared by every training test)."""
  source = base / "corpus.txt"
  source.write_text("".join(s + "\n" for s, _ in corpus.build_sentences(WIKI, limit=N_SENT)), encoding="utf-8")
  data_dir = base / "data"
  corpus.prepare(source, data_dir, vocab_size=VOCAB, max_len=MAX_LEN, limit=N_SENT, progress=False)
  corpus.compute_teacher_vectors(data_dir, FakeTeacher(), batch_size=32, progress=False)
  config = base / "tiny.json"
  config.write_text(json.dumps(RUN_CFG))
  return {"base": base, "source": source, "data_dir": data_dir, "config": config}


def run_args(work, out, *extra) -> list[str]:
  return ["--config", str(work["config"]), "--profile", "full", "--data-source", str(work["source"]),
          "--data-dir", str(work["data_dir"]), "--out", str(out), "--quiet", *extra]


def run_main(argv, interrupt_after: int | None = None) -> int:
  """train.main in this process with the fake teacher; interrupt_after=k sends a real SIGINT right after step k."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(heldout, "load_teacher", fake_teacher)
    if interrupt_after is not None:
      launch, calls = Trainer.launch, [0]

      def step_then_interrupt(self, batch):
        out = launch(self, batch)
        calls[0] += 1
        if calls[0] == interrupt_after: signal.raise_signal(signal.SIGINT)
        return out
      mp.setattr(Trainer, "launch", step_then_interrupt)
    return train.main([str(a) for a in argv])


def step_records(run: Path) -> dict[int, dict]:
  """Training records of metrics.jsonl by step (evaluation records left out; a re-logged step keeps its last)."""
  recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r for r in recs if "loss" in r}


@pytest.fixture(scope="module")
def runs(work):
  """One uninterrupted 12-step run, and a 12-step run stopped by Ctrl-C after step 6 and then resumed."""
  full, part = work["base"] / "full", work["base"] / "part"
  assert run_main(run_args(work, full)) == 0
  # its first leg keeps the token targets on the device (--tok-table device; the CPU's default is host): the
  # comparison with the uninterrupted run then also shows that both paths train the same losses
  assert run_main(run_args(work, part, "--tok-table", "device"), interrupt_after=INTERRUPT_AT) == 0
  stopped_at = train.read_checkpoint_info(part / "last")["step"]
  # only --resume: config, data folder and corpus come from the checkpoint
  assert run_main(["--resume", part, "--quiet"]) == 0
  return {"full": full, "part": part, "stopped_at": stopped_at}


@pytest.fixture
def step_clock(monkeypatch):
  """train.py's clock moved by its training steps alone (0.2 s each), so --minutes and --time-limit budgets count
  steps: the plans no longer hang on how busy the machine is (another test worker, a compile) while the planner, the
  hard stop and the resumed plan run as they do on a real clock (test_step_planner_* test the rate maths)."""
  import types
  from studentz_training.trainer import Trainer
  now = [time.perf_counter()]
  clock = types.SimpleNamespace(perf_counter=lambda: now[0], time=time.time)
  launch = Trainer.launch

  def timed_launch(self, batch):
    now[0] += 0.2
    return launch(self, batch)
  monkeypatch.setattr(Trainer, "launch", timed_launch)
  monkeypatch.setattr(train, "time", clock)
  monkeypatch.setattr(train.StepPlanner.__init__, "__defaults__", (clock.perf_counter,))


def test_minutes_plans_a_complete_schedule(work, tmp_path, step_clock):
  """train.py --minutes: the config's 12 steps become the planned count that fills the budget (logged, and written
  into the checkpoint's config so --resume continues that schedule), and the LR ends decayed, not cut off."""
  out = tmp_path / "budget"
  assert run_main(run_args(work, out, "--minutes", "0.4", "--eval_every", "100")) == 0
  recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  plans = [r["planned_steps"] for r in recs if "planned_steps" in r]
  steps = step_records(out)
  last = steps[max(steps)]
  saved = train.read_checkpoint_info(out / "last")
  assert plans and plans[-1] > RUN_CFG["steps"] and saved["config"]["steps"] == plans[-1], (plans, saved["step"])
  base, floor = saved["config"]["optimizer"]["lr"], saved["config"]["min_lr_ratio"]
  assert last["lr"] < 0.25 * base and last["lr"] >= 0.99 * floor * base, (last, plans)


def test_minutes_survives_a_pause_and_resume(work, tmp_path, step_clock):
  """--minutes with --time-limit: the process stops early (a pause) with the plan so far in its checkpoint; --resume
  --minutes R re-plans the rest for the R minutes left, from the saved plan, and still ends with the LR decayed."""
  out = tmp_path / "paused"
  assert run_main(run_args(work, out, "--minutes", "0.5", "--time-limit", "0.25", "--eval_every", "100")) == 0
  paused = train.read_checkpoint_info(out / "last")
  assert paused["config"]["steps"] > paused["step"] > RUN_CFG["steps"], paused["step"]
  assert run_main(["--resume", out, "--quiet", "--minutes", "0.25"]) == 0
  steps, done = step_records(out), train.read_checkpoint_info(out / "last")
  assert done["step"] > paused["step"] and done["config"]["steps"] >= max(steps), (done["step"], max(steps))
  assert steps[max(steps)]["lr"] < 0.25 * done["config"]["optimizer"]["lr"]


def test_without_data_dir_the_data_goes_to_runs_data(work, tmp_path, monkeypatch):
  """The README's main job passes no --data-dir: the corpus slice is prepared under ROOT/runs/data/<corpus>-<limit>-
  v<vocab>-l<max_len> (the sixth session's crops suffix broke exactly this path: Path + str)."""
  monkeypatch.setattr(train, "ROOT", tmp_path)
  argv = ["--config", work["config"], "--profile", "full", "--data-source", work["source"], "--out", tmp_path / "run",
          "--quiet", "--steps", "2"]
  assert run_main(argv) == 0
  made, = (tmp_path / "runs" / "data").glob(f"corpus-{N_SENT}-v{VOCAB}-l{MAX_LEN}-*")
  assert (made / "tokens.npy").is_file() and any(made.glob("teacher-fake-teacher-*"))
  cfg = sz.Config.from_dict({**sz.Config().to_dict(), "data_crops": 2, "data_limit": 0})
  assert train.default_data_dir(cfg, work["source"]).name.startswith("corpus-all-v16000-l64-c2-")


def test_data_folder_is_keyed_by_content_not_file_name(tmp_path):
  """Two corpora named alike get two data folders (one rebuilt in place would silently change what --eval reads);
  the same corpus with another tokenizer too."""
  from studentz_corpus.tokenizer import StudentTokenizer
  a, b = tmp_path / "a" / "corpus.txt", tmp_path / "b" / "corpus.txt"
  for p, text in ((a, "One sentence about cats on a mat here."), (b, "Another sentence about dogs in a park.")):
    p.parent.mkdir()
    p.write_text(text + "\n")
  cfg = sz.Config()
  assert train.default_data_dir(cfg, a) != train.default_data_dir(cfg, b)
  assert train.default_data_dir(cfg, a) == train.default_data_dir(cfg, a)
  tok = StudentTokenizer.fit(["One sentence about cats on a mat here."] * 3, vocab_size=300)
  assert train.default_data_dir(cfg, a, tok) != train.default_data_dir(cfg, a)


def test_checkpoint_holds_exactly_the_model_tensors(runs):
  # validation runs the encoder under a JIT; nothing of that JIT may leak into the saved weights
  from safetensors import safe_open
  from tinygrad.nn.state import get_state_dict
  ckpt = runs["full"] / "last"
  enc, _, _ = train.load_encoder(ckpt)
  with safe_open(str(ckpt / "model.safetensors"), framework="numpy") as f: saved = set(f.keys())
  assert saved == {f"encoder.{k}" for k in get_state_dict(sz.Encoder(enc.cfg))}


def test_resume_after_interrupt_matches_uninterrupted_run(work, runs):
  assert runs["stopped_at"] == INTERRUPT_AT
  # resumed without --data-source: the data folder must still be the run's corpus, not rebuilt from the default one
  meta = json.loads((work["data_dir"] / "meta.json").read_text())
  assert Path(meta["source"]).resolve() == work["source"].resolve()
  a, b = step_records(runs["full"]), step_records(runs["part"])
  assert sorted(a) == sorted(b) == list(range(1, RUN_STEPS + 1))
  for s in range(1, RUN_STEPS + 1):
    for k in ("loss", "cos", "mse", "lr", "grad_norm"):
      assert b[s][k] == pytest.approx(a[s][k], rel=1e-5, abs=1e-7), f"step {s} {k}: resumed {b[s][k]} vs {a[s][k]}"
  ia, ib = (train.read_checkpoint_info(r / "last") for r in (runs["full"], runs["part"]))
  assert ia["step"] == ib["step"] == RUN_STEPS and ia["loader"] == ib["loader"]
  wa, wb = (sz.load_tensors(r / "last" / "model.safetensors") for r in (runs["full"], runs["part"]))
  assert wa.keys() == wb.keys()
  for k in wa: np.testing.assert_allclose(wb[k], wa[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_kill_9_then_resume(work):
  out = work["base"] / "killed"
  code = ("import sys, train, test_train; train.heldout.load_teacher = test_train.fake_teacher; "
          "sys.exit(train.main(sys.argv[1:]))")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
  argv = run_args(work, out, "--steps", "1000", "--eval_every", "2")
  with open(work["base"] / "killed.err", "w") as err:
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, stdout=err, stderr=err)
    try:
      deadline = time.monotonic() + 150
      while not (out / "last").exists():
        assert proc.poll() is None, f"run ended early: {(work['base'] / 'killed.err').read_text()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 150 s"
        time.sleep(0.02)
      proc.send_signal(signal.SIGKILL)
    finally:
      if proc.poll() is None: proc.kill()
      proc.wait()
  assert proc.returncode == -signal.SIGKILL
  enc, info, tok = train.load_encoder(out / "last")
  k = info["step"]
  assert k >= 2 and k % 2 == 0 and tok.vocab_size <= VOCAB
  assert run_main(["--resume", out, "--steps", k + 2, "--quiet"]) == 0
  enc, info, _ = train.load_encoder(out / "last")
  assert info["step"] == k + 2
  # steps logged after the checkpoint and before the kill were trimmed on resume: each step is recorded once
  steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
           if "loss" in json.loads(line)]
  assert len(steps) == len(set(steps)) and max(steps) == k + 2
  rows = train.split_rows(work["data_dir"], "val", FakeTeacher.fingerprint, 4)
  assert np.isfinite(train.encode_ids(enc, rows["tokens"], rows["mask"], BATCH)).all()


def test_run_folder_in_use_needs_resume(work, runs, capsys):
  assert run_main(run_args(work, runs["full"])) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "already holds a run" in err[0] and "--resume" in err[0]


def test_token_table_that_cannot_be_placed(work, monkeypatch, capsys):
  """--tok-table device on a device that cannot hold the table: a one-line error, before any step."""
  from studentz_training import trainer
  def full(*a, **k): raise MemoryError("Allocation of 9.80 GB failed on CUDA. Used: 70 GB")
  monkeypatch.setattr(trainer, "device_table", full)
  out = work["base"] / "no-room"
  with pytest.raises(SystemExit) as e: run_main(run_args(work, out, "--tok-table", "device"))
  err = capsys.readouterr().err
  assert e.value.code == 2 and "error: --tok-table device: the token targets" in err and "MemoryError" in err, err
  assert not (out / "last").exists()


def test_time_limit_stops_with_a_loadable_checkpoint(work, capsys):
  out = work["base"] / "timed"
  assert run_main(run_args(work, out, "--time-limit", "1e-6")) == 0
  assert "time limit" in capsys.readouterr().err
  _, info, _ = train.load_encoder(out / "last")
  assert info["step"] == 1 and "val_cos" in info["metrics"]


def test_eval_json(runs, capsys):
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(heldout, "load_teacher", fake_teacher)
    assert train.main(["--eval", str(runs["full"] / "last"), "--json", "--stsb-limit", "8"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1
  res = json.loads(lines[0])
  for k in ("val_cos", "val_mse", "retrieval_p_at_10", "stsb_spearman", "teacher_stsb_spearman"):
    assert isinstance(res[k], float) and np.isfinite(res[k]), (k, res.get(k))
  assert res["step"] == RUN_STEPS and res["stsb_n"] == 8 and res["eval_n"] > 10
  # val_cos and val_mse computed here another way: the test split's texts through the tokenizer and the checkpoint's
  # encoder (eager, no JIT), against the teacher's vectors of those texts (not the data folder's cache)
  from studentz_training import evaluate
  info = train.read_checkpoint_info(runs["full"] / "last")
  dd = corpus.open_data_dir(info["data_dir"])
  texts = dd.texts(dd.indices("test")[:4096])
  enc = evaluate.load_models(runs["full"] / "last")[0]["encoder"]
  ids, mask = dd.tokenizer.encode_batch(texts, enc.cfg.max_len)
  zs = enc(Tensor(ids), Tensor(mask)).float().numpy()
  zt = FakeTeacher().embed(texts)
  cos = (zs * zt).sum(1) / (np.linalg.norm(zs, axis=1) * np.linalg.norm(zt, axis=1))
  assert res["eval_n"] == len(texts) and abs(cos.mean()) > 0.01  # a sign flip must show
  assert res["val_cos"] == pytest.approx(float(cos.mean()), abs=2e-3)
  assert res["val_mse"] == pytest.approx(float(((zs - zt) ** 2).sum(1).mean()), rel=1e-2)


def test_eval_on_another_data_folder(runs, work, tmp_path, capsys):
  """--eval --data-dir: a checkpoint that names no data folder (as a shipped model) is evaluated on a given one with
  its tokenizer; without it, or with a folder of another tokenizer, one error line."""
  import shutil
  ck = tmp_path / "ck"
  shutil.copytree(runs["full"] / "last", ck)
  info = json.loads((ck / "config.json").read_text())
  (ck / "config.json").write_text(json.dumps({**info, "data_dir": ""}))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(heldout, "load_teacher", fake_teacher)
    assert train.main(["--eval", str(ck), "--json", "--stsb-limit", "8"]) == 2
    assert "names no data folder" in capsys.readouterr().err
    assert train.main(["--eval", str(ck), "--json", "--stsb-limit", "8", "--data-dir", str(work["data_dir"])]) == 0
    assert json.loads(capsys.readouterr().out)["eval_n"] > 10
    # the validation split instead: other sentences, so another figure, named in the result
    assert train.main(["--eval", str(ck), "--json", "--stsb-limit", "8", "--data-dir", str(work["data_dir"]),
                       "--eval-split", "val"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["eval_split"] == "val" and res["eval_n"] == min(4096, len(corpus.open_data_dir(work["data_dir"])
                                                                          .indices("val")))
    assert train.main(["--eval", str(ROOT / "models" / "default"), "--data-dir", str(work["data_dir"])]) == 2
    assert "another tokenizer" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# CLI errors: a subprocess each, so exit status and "no traceback" are what a user sees


def cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, args)], cwd=cwd, capture_output=True,
                        text=True, timeout=120)


def assert_one_line_error(r, *words):
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr, r.stderr[-2000:]
  for w in words: assert w in lines[0], (w, lines[0])


def test_help():
  r = cli("--help")
  assert r.returncode == 0 and "--resume" in r.stdout and "--eval" in r.stdout


@pytest.mark.parametrize("args,words", [
  (["--optimizer.lr", "-1"], ["optimizer.lr must be positive"]),
  (["--n_blocks", "3", "--dilation_schedule", "[1, 2]"], ["dilation_schedule has 2 entries", "n_blocks is 3"]),
  (["--bogus", "1"], ["unknown key", "bogus"]),
  (["--minutes", "-1"], ["must be 0 or more"]),
], ids=["negative-lr", "dilations-vs-blocks", "unknown-key", "negative-minutes"])
def test_invalid_config_values(args, words):
  assert_one_line_error(cli(*args, "--print-config"), *words)


def test_config_file_not_json(tmp_path):
  bad = tmp_path / "cfg.json"
  bad.write_text("d_model: 32\n")
  assert_one_line_error(cli("--config", bad), "not valid JSON", str(bad))


def test_eval_missing_checkpoint(tmp_path):
  assert_one_line_error(cli("--eval", tmp_path / "nope"), "checkpoint not found")


def test_eval_truncated_weights(runs, tmp_path):
  ck = tmp_path / "ck"
  shutil.copytree(runs["full"] / "last", ck)
  weights = ck / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
  assert_one_line_error(cli("--eval", ck, "--json"), "model.safetensors", "truncated or corrupt")


def test_a_run_whose_validations_are_all_non_finite_names_no_best(work, tmp_path, monkeypatch, capsys):
  """A diverged run (every val_cos NaN) has no best checkpoint: it says so and exits 1 instead of naming best/."""
  nan = float("nan")
  monkeypatch.setattr(train, "validate", lambda enc, rows, cfg: {"val_cos": nan, "val_mse": nan,
                                                                  "val_cos_domain_mean": nan, "val_n": 1})
  assert run_main(run_args(work, tmp_path / "run", "--steps", "2", "--eval_every", "1")) == 1
  err = capsys.readouterr().err
  assert "no best checkpoint" in err and "checkpoints in" not in err
  assert (tmp_path / "run" / "last").exists() and not (tmp_path / "run" / "best").exists()


def test_resume_links_a_best_step_a_kill_left_unlinked(work):
  """validate_and_save writes last/ then links best/: a kill between the two left the best step without its link (a
  resumed run that never beat it then ended with no best). Resuming links it."""
  out = work["base"] / "unlinked"
  assert run_main(run_args(work, out, "--steps", "2", "--eval_every", "2")) == 0
  best = (out / "best").resolve()
  (out / "best").unlink()
  assert run_main(["--resume", out, "--steps", "4", "--quiet"]) == 0
  assert (out / "best").exists() and json.loads((out / "best" / "config.json").read_text())["step"] in (2, 4)
  assert best.name == "step-0000002"

"""Student encoder properties: receptive fields of both padding modes, padding invariance, config validation."""
import numpy as np
import pytest
from tinygrad import Tensor

from studentz_kernels import backend
import studentz as sz
from studentz_training.trainer import Trainer


@pytest.fixture(scope="module")
def cfg():
  return sz.Config(vocab_size=64, d_model=16, hidden=24, n_blocks=2, dilation_schedule=[1, 2], kernel_size=3,
                   proj_dim=24, max_len=12, dropout=0.0, pool="gated").validate()


def _feats(enc, ids, mask):
  return enc.features(Tensor(ids), Tensor(mask)).numpy()


@pytest.mark.parametrize("padding", ["centred", "causal"])
def test_receptive_field(cfg, padding):
  c = sz.Config.from_dict({**cfg.to_dict(), "padding": padding})
  Tensor.manual_seed(0)
  enc = sz.Encoder(c)
  rf = enc.receptive_field                       # 1 + (k-1) * sum(dilations) = 7
  assert rf == 7
  rng = np.random.default_rng(0)
  ids = rng.integers(4, 64, (2, 12)).astype(np.int32)
  mask = np.ones((2, 12), np.float32)
  base = _feats(enc, ids, mask)
  p = 6
  ids2 = ids.copy()
  ids2[:, p] = (ids2[:, p] + 1 - 4) % 60 + 4
  diff = np.abs(_feats(enc, ids2, mask) - base).max(axis=(0, 2))   # per position
  changed = set(np.nonzero(diff > 1e-6)[0].tolist())
  if padding == "causal":   # sees only the past: positions p .. p + rf - 1 may change, nothing before p
    assert min(changed) == p and max(changed) <= p + rf - 1
  else:                     # centred window: p - rf//2 .. p + rf//2
    assert min(changed) >= p - rf // 2 and max(changed) <= p + rf // 2 and p in changed
    assert changed != {p}   # it does look at both sides


def _wake_zero_paths(enc, seed: int = 0):
  """Random weights in the paths that start at zero (pool head, block context), so a test sees them work."""
  rng = np.random.default_rng(seed)
  lins = list(enc.ctx_in or []) + ([enc.head_down] if enc.cfg.pool_head else [])
  for lin in lins:
    lin.weight.assign(Tensor(rng.normal(0, 0.3, lin.weight.shape).astype(np.float32))).realize()


@pytest.mark.parametrize("pool,extra", [("mean", {}), ("gated", {}), ("gated", {"pool_head": 8}),
                                        ("mean", {"block_context": True}),
                                        ("gated", {"pool_head": 8, "block_context": True, "norm": "group"})])
def test_padding_never_changes_z(cfg, pool, extra):
  c = sz.Config.from_dict({**cfg.to_dict(), "pool": pool, **extra})
  Tensor.manual_seed(1)
  enc = sz.Encoder(c)
  _wake_zero_paths(enc)
  sent = np.array([1, 17, 33, 9, 41, 2], np.int32)
  zs = []
  for L in (8, 12):   # the same sentence padded to two lengths (and next to a different neighbour row)
    ids = np.zeros((2, L), np.int32)
    mask = np.zeros((2, L), np.float32)
    ids[0, :6], mask[0, :6] = sent, 1
    ids[1, :L], mask[1, :L] = np.arange(L) % 50 + 4, 1
    zs.append(enc(Tensor(ids), Tensor(mask)).numpy()[0])
  np.testing.assert_allclose(zs[0], zs[1], rtol=1e-5, atol=1e-6)


def test_block_context_lets_every_token_see_the_sentence(cfg):
  """With block_context a change at one position reaches every position in one block (the receptive field is the
  sentence); the zero-initialised context changes nothing at init; causal padding is refused."""
  c = sz.Config.from_dict({**cfg.to_dict(), "block_context": True, "n_blocks": 1, "dilation_schedule": [1]})
  Tensor.manual_seed(0)
  enc = sz.Encoder(c)
  ids = np.random.default_rng(0).integers(4, 64, (1, 12)).astype(np.int32)
  ids2 = ids.copy()
  ids2[0, 0] += 1
  mask = np.ones((1, 12), np.float32)
  diff = lambda: np.abs(_feats(enc, ids2, mask) - _feats(enc, ids, mask)).max(axis=(0, 2))  # noqa: E731
  assert (diff()[3:] < 1e-6).all()               # at init: the plain block, whose k=3 window ends at position 1
  _wake_zero_paths(enc)
  assert (diff() > 1e-4).all()
  with pytest.raises(ValueError, match="block_context needs padding 'centred'"):
    sz.Config(block_context=True, padding="causal").validate()
  with pytest.raises(ValueError, match="pool_head must be"):
    sz.Config(pool_head=-1).validate()


def test_group_norm_is_padding_invariant(cfg):
  c = sz.Config.from_dict({**cfg.to_dict(), "norm": "group"})
  Tensor.manual_seed(2)
  enc = sz.Encoder(c)
  ids = np.array([[1, 5, 6, 7, 2, 0, 0, 0]], np.int32)
  m = (ids > 0).astype(np.float32)
  m[0, 0] = 1
  z1 = enc(Tensor(ids), Tensor(m)).numpy()
  ids2 = np.concatenate([ids, np.zeros((1, 4), np.int32)], 1)
  z2 = enc(Tensor(ids2), Tensor(np.concatenate([m, np.zeros((1, 4), np.float32)], 1))).numpy()
  np.testing.assert_allclose(z1, z2, rtol=1e-5, atol=1e-6)


def test_config_validation_messages():
  with pytest.raises(ValueError, match="dilation_schedule has 3 entries but n_blocks is 8"):
    sz.Config(dilation_schedule=[1, 2, 4]).validate()
  with pytest.raises(ValueError, match="optimizer.lr must be positive"):
    sz.Config().override(("optimizer.lr", "-1"))
  with pytest.raises(ValueError, match="unknown key"):
    sz.Config().override(("bogus", "1"))
  with pytest.raises(ValueError, match="unknown keys"):
    sz.Config.from_dict({"vocab_size": 100, "colour": "red"})
  c = sz.Config().override(("n_blocks", "2"), ("dilation_schedule", "[1, 3]"), ("optimizer.lr", "0.01"))
  assert c.n_blocks == 2 and c.dilation_schedule == [1, 3] and c.optimizer["lr"] == 0.01
  assert c.optimizer["weight_decay"] == 0.01     # nested dicts merge, they are not replaced
  # a config value is data, never code
  with pytest.raises(ValueError, match="norm must be"):
    sz.Config().override(("norm", "__import__('os').system('true')"))


def test_display_grid():
  assert sz.display_grid(768) == (32, 24) and sz.display_grid(384) == (16, 24)
  assert sz.as_grid(np.zeros((3, 768))).shape == (3, 32, 24)


def test_device_switches(monkeypatch):
  monkeypatch.delenv("DEV", raising=False)
  monkeypatch.setenv("METAL", "1")
  assert backend.select_device() == "METAL"
  import os
  assert "METAL" not in os.environ and os.environ["DEV"] == "METAL"
  monkeypatch.setenv("DEV", "CPU")
  monkeypatch.setenv("CLANG", "1")
  assert backend.select_device() == "CPU"
  with pytest.raises(backend.DeviceError, match="unknown device 'TPU'"):
    backend.select_device("TPU")
  monkeypatch.setenv("DEV", "CPU")


def test_kernel_settings_read_from_an_environment():
  s = backend.KernelSettings.from_env({"STUDENTZ_CUDA_GEMM": "0", "STUDENTZ_CUDA_MULTI": "1",
                                       "STUDENTZ_GEMM_BEAM": "2", "STUDENTZ_BEAM_DIR": "/x"})
  assert (s.cuda_gemm, s.cuda_ops, s.cuda_multi, s.cpu_gemm, s.gemm_beam) == (False, True, True, True, "2")
  assert str(s.beam_dir) == "/x" and backend.KernelSettings.from_env({}) == backend.KernelSettings()
  with pytest.raises(SystemExit, match="STUDENTZ_CPU_GEMM must be 0 or 1, got 'yes'"):
    backend.KernelSettings.from_env({"STUDENTZ_CPU_GEMM": "yes"})


def test_tinygrad_defaults_never_override_the_users_own(monkeypatch):
  from tinygrad import helpers
  assert backend.tinygrad_defaults("CPU") == {}
  for k in ("TC_OPT", "REDUCEOP_SPLIT_THRESHOLD", "REDUCEOP_SPLIT_SIZE"): monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv("REDUCEOP_SPLIT_SIZE", "20")
  monkeypatch.setattr(helpers.TC_OPT, "value", 0)
  assert backend.apply_tinygrad_defaults("CUDA:1") == {"TC_OPT": "2", "REDUCEOP_SPLIT_THRESHOLD": "4096"}
  assert helpers.TC_OPT.value == 2 and helpers.getenv("REDUCEOP_SPLIT_THRESHOLD", 0) == 4096
  assert helpers.getenv("REDUCEOP_SPLIT_SIZE", 0) == 20
  monkeypatch.delenv("REDUCEOP_SPLIT_THRESHOLD")
  helpers.getenv.cache_clear()


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_queued_steps_read_later_match_steps_read_at_once(cfg, grad_accum):
  """train.py queues steps and reads their figures in groups; a JIT reuses its output buffer on every replay, so each
  queued result must be its own copy: figures read after three more steps equal those of steps read one by one."""
  rng = np.random.default_rng(0)
  c = sz.Config.from_dict({**cfg.to_dict(), "batch_size": 4, "grad_accum": grad_accum, "warmup_steps": 1})
  batches = []
  for _ in range(4):
    mask = (np.arange(c.max_len)[None] < rng.integers(3, c.max_len + 1, (4, 1))).astype(np.float32)
    teacher = rng.standard_normal((4, c.proj_dim)).astype(np.float32)
    batches.append({"tokens": (rng.integers(4, c.vocab_size, (4, c.max_len)) * mask).astype(np.int32), "mask": mask,
                    "teacher": teacher / np.linalg.norm(teacher, axis=1, keepdims=True)})

  def trainer():
    Tensor.manual_seed(0)
    return Trainer(c, {"encoder": sz.Encoder(c)}, sz.distill_loss_fn)
  a = trainer()
  one_by_one = [a.step(b) for b in batches]
  b = trainer()
  queued = [b.launch(x) for x in batches]
  later = [b.read(q) for q in queued]
  assert len({round(f["loss"], 6) for f in one_by_one}) == 4  # the steps differ, so a stale buffer would show
  for x, y in zip(one_by_one, later):
    assert x.keys() == y.keys()
    for k in x: assert y[k] == pytest.approx(x[k], rel=1e-5, abs=1e-7), k


def test_dropout_draws_what_tinygrad_draws_and_is_identity_outside_training():
  """studentz.dropout materialises its output (for the speed of the GEMM that reads it): the
  same masks as Tensor.dropout under the same seed, gradients through the mask, nothing dropped at inference."""
  from tinygrad.helpers import Context
  x = Tensor.randn(4, 8, 16).realize()
  with Context(TRAINING=1):
    Tensor.manual_seed(3)
    ours = sz.dropout(x, 0.25)
    g = (ours * 1).sum().gradient(x)[0].numpy()
    ours = ours.numpy()
    Tensor.manual_seed(3)
    theirs = x.dropout(0.25).numpy()
  np.testing.assert_array_equal(ours, theirs)
  assert 0.15 < (ours == 0).mean() < 0.35
  np.testing.assert_allclose(g, (ours != 0) / 0.75, rtol=1e-6)
  np.testing.assert_array_equal(sz.dropout(x, 0.25).numpy(), x.numpy())


def test_similarity_kd_is_the_cross_entropy_of_neighbour_softmaxes_and_is_least_at_the_teachers_geometry():
  rng = np.random.default_rng(0)
  zt, zs = rng.normal(size=(6, 8)).astype(np.float32), rng.normal(size=(6, 8)).astype(np.float32)
  def ref(s, t, tau=0.5):  # numpy oracle, self-similarity left out (its -inf log times a zero probability)
    n = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    ls, lt = n(s) @ n(s).T / tau, n(t) @ n(t).T / tau
    np.fill_diagonal(ls, -np.inf), np.fill_diagonal(lt, -np.inf)
    log_s = ls - np.log(np.exp(ls - ls.max(1, keepdims=True)).sum(1, keepdims=True)) - ls.max(1, keepdims=True)
    p_t = np.exp(lt - lt.max(1, keepdims=True)); p_t /= p_t.sum(1, keepdims=True)
    return -np.where(p_t > 0, p_t * np.where(p_t > 0, log_s, 0), 0).sum(1).mean()
  got = sz.similarity_kd(Tensor(zs), Tensor(zt), 0.5).item()
  np.testing.assert_allclose(got, ref(zs, zt), rtol=1e-4)
  # a rescaled teacher (same directions) is the minimum: lower than any other student
  at_teacher = sz.similarity_kd(Tensor(3 * zt), Tensor(zt), 0.5).item()
  assert at_teacher < got and abs(at_teacher - ref(zt, zt)) < 1e-4
  cfg = sz.Config(loss_weights={"cos": 1.0, "mse": 1.0, "ce": 0.0, "sem": 0.0, "rel": 0.5}).validate()
  parts = sz.distill_losses(Tensor(zs), Tensor(zt), cfg)
  rel = sz.similarity_kd(Tensor(zs), Tensor(zt), cfg.temperature).item()
  np.testing.assert_allclose(parts["loss"].item(), parts["cos"].item() + parts["mse"].item() + 0.5 * rel, rtol=1e-4)

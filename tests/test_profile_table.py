"""scripts/profile_table.py: the kernel table of one step from a tinygrad DEBUG=2 log."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import profile_table  # noqa: E402

E = "\x1b[32m"  # DEBUG=2 colours its lines; the parser must not care
LOG = f"""scheduled     3 kernels in    12.00 ms | CACHE MISS
{E}*** CUDA       1\x1b[0m E_2   arg  1 mem   0.00 GB tm     40.00us/     0.04ms (      0 GFLOPS    0|0      GB/s)
scheduled   4 kernels in  4781.99 ms | CACHE MISS
*** CUDA       2 copy 8 B, CUDA <- PYTHON arg 2 mem   0.00 GB tm   2000.00us/     2.00ms (      0 GFLOPS    0|0 GB/s)
*** CUDA       3 r_512_4_32   arg  4 mem   1.27 GB tm   3600.00us/     5.64ms (  37908 GFLOPS   42|1205   GB/s)
*** CUDA       4 r_512_4_32   arg  4 mem   1.37 GB tm   3400.00us/     9.04ms (  30000 GFLOPS   42|1202   GB/s)
*** CUDA       5 E_8_32_4     arg  3 mem   1.37 GB tm      1.00ms/    10.04ms (      2 GFLOPS   42|1202   GB/s)
*** CUDA       5 cuda_gemm_1  arg  3 mem   1.37 GB tm    500.00us/    10.54ms (    280 TFLOPS  776|4602   GB/s)
JIT GRAPHing batch with 32 kernels
*** CUDA       6 batched 32   arg  3 mem   1.88 GB tm   8000.00us/    18.04ms (  35164 GFLOPS  117|117 GB/s)
*** CUDA       7 batched 64   arg  2 mem   1.88 GB tm     20.00ms/    38.04ms (  34579 GFLOPS  144|144 GB/s)
*** CUDA       8 batched 32   arg  3 mem   1.88 GB tm   7000.00us/    45.04ms (  35164 GFLOPS  117|117 GB/s)
*** CUDA       9 batched 64   arg  2 mem   1.88 GB tm     21.00ms/    66.04ms (  34579 GFLOPS  144|144 GB/s)
"""


def test_groups_the_largest_schedule_and_sums_replayed_steps(tmp_path, capsys):
  log = tmp_path / "profile.log"
  log.write_text(LOG)
  profile_table.main([str(log)])
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("4 kernels (4 scheduled), 8.50 ms of kernel time; JIT-replayed steps: 28.0, 28.0 ms")
  rows = [line.split() for line in out[2:]]
  assert rows[0] == ["r_512_4_32", "2", "7.00", "82.4%", "37908"]  # copies and the small schedule are left out
  assert rows[1] == ["E_8_32_4", "1", "1.00", "11.8%", "2"]
  assert rows[2] == ["cuda_gemm_1", "1", "0.50", "5.9%", "280000"]  # DEBUG=2 prints TFLOPS from 10^4 GFLOP/s on

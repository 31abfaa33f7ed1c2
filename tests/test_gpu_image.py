"""benchmarks/gpu_image.py: the datasheet table and error classification (fast), and its
``--smoke`` run on this machine in a subprocess, whose JSON must hold every figure, finite
(slow)."""

import importlib.util
import json
import math
import os
import pathlib
import signal
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_image.py"
SMOKE_TIMEOUT_S = 1200  # the run's own budget (--max-minutes 15) ends it first; this catches a hang


def _module():
    spec = importlib.util.spec_from_file_location("gpu_image", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # standard library only at import: JAX is imported by the parts
    return mod


def test_known_peaks_by_device_kind():
    g = _module()
    assert g.known_peak("NVIDIA H100 80GB HBM3")[0] == "H100 SXM"
    assert g.known_peak("NVIDIA H100 PCIe")[0] == "H100 PCIe"
    assert g.known_peak("NVIDIA H200")[0] == "H200 SXM"
    assert g.known_peak("NVIDIA A100-SXM4-80GB")[0] == "A100"
    assert g.known_peak("cpu") is None
    assert g.device_slug("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
    assert g.is_oom("XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
    assert not g.is_oom("ValueError: bad shape")


def _finite_positive(row, key):
    v = row.get(key)
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


@pytest.mark.slow
def test_smoke_run_writes_every_figure(tmp_path):
    out = tmp_path / "gpu_image_smoke.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--smoke", "--max-minutes", "15", "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=SMOKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and its part processes
        proc.communicate()
        pytest.fail(f"gpu_image.py --smoke did not finish in {SMOKE_TIMEOUT_S} s")
    assert proc.returncode == 0, log[-4000:]
    doc = json.loads(out.read_text())
    assert doc["meta"]["status"] == "complete", (doc["meta"], log[-4000:])
    assert doc["meta"]["smoke"] is True
    dev = doc["device"]
    assert dev["device_kind"] and dev["jax"] and dev["x64"] is False
    for k in ("matmul_f32_default_tflops", "matmul_f32_highest_tflops", "matmul_bf16_tflops"):
        assert _finite_positive(doc["peak"], k), k
    assert set(doc["configs"]) == {"paper-mnist", "paper-cifar10"}
    for name, row in doc["configs"].items():
        assert row["batch"] == 4 and row["official_batch"] == 64 and row["errors"] == [], (name, row)
        for k in ("build_s", "compile_s", "step_s", "images_per_s", "peak_bytes", "hand_flops_per_step",
                  "xla_flops_per_step", "achieved_tflops", "eval_s_per_1000", "sample_s_per_1000",
                  "eval_first_call_s", "sample_first_call_s", "expected_terms"):
            assert _finite_positive(row, k), (name, k, row.get(k))
        assert 1 <= row["steps"] <= 2 and len(row["step_s_all"]) == row["steps"]  # fewer when the budget is short
        assert row["eval_n"] == 4 and row["sample_n"] == 4
        assert row["peak_bytes_source"] in ("memory_stats", "xla_memory_analysis")
        assert _finite_positive(row["frac_of_peak"], "measured_matmul_f32_default")
        assert row["loss_finite"] and row["step_ok"] and row["eval_finite"] and row["sample_finite"]
        assert row["all_finite"] is True
        assert math.isfinite(row["loss"]) and math.isfinite(row["eval_bpd"])

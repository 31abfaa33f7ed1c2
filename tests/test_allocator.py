"""The allocator setting of flowjax_res/_allocator.py is in effect: a jitted program whose
temporaries exceed glibc's largest mmap threshold does not fault its pages in again on
every call after ``import flowjax_res``, and does with ``FLOWJAX_RES_MALLOC=system``."""

import json
import os
import subprocess
import sys

import pytest

PROBE = os.path.join(os.path.dirname(__file__), "_alloc_probe.py")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")


def _probe(**env):
    out = subprocess.run([sys.executable, PROBE], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_buffers_reused_after_import():
    res, _ = _probe()
    assert res["in_effect"] is True
    # a handful of pages at most, against 16,384 per 64 MiB temporary when mapped anew
    assert res["faults_per_call"] < 0.05 * res["pages_per_array"]


@pytest.mark.slow
def test_opt_out_leaves_system_allocator():
    res, _ = _probe(FLOWJAX_RES_MALLOC="system")
    assert res["in_effect"] is False
    assert res["faults_per_call"] > res["pages_per_array"]


@pytest.mark.slow
def test_import_after_jax_ran_warns():
    res, err = _probe(PROBE_ORDER="jax_first")
    assert "imported after JAX ran a computation" in err


def test_bad_value_is_named(monkeypatch):
    from flowjax_res import _allocator

    monkeypatch.setenv(_allocator.ENV_VAR, "fast")
    monkeypatch.setattr(_allocator, "_applied", None)
    with pytest.raises(ValueError, match="FLOWJAX_RES_MALLOC must be 'keep'"):
        _allocator.keep_freed_memory()

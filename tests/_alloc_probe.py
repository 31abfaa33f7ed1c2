"""Probe for tests/test_allocator.py: minor page faults per call of a jitted program
whose temporaries (64 MiB matrices) exceed glibc's largest mmap threshold."""
import json
import os
import resource

import jax
import jax.numpy as jnp

if os.environ.get("PROBE_ORDER") == "jax_first":
    jax.jit(lambda x: x * 2)(jnp.ones(10)).block_until_ready()
import flowjax_res  # noqa: E402,F401  (the import applies the allocator settings)
from flowjax_res import _allocator  # noqa: E402

n = 4096  # 64 MiB per float32 matrix, above glibc's largest mmap threshold (32 MiB)
f = jax.jit(lambda x: jnp.sum(jnp.tanh(x @ x)))
x = jnp.ones((n, n)) / n
f(x).block_until_ready()
f(x).block_until_ready()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    f(x).block_until_ready()
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"faults_per_call": (r1 - r0) / 3, "pages_per_array": n * n * 4 / 4096, "in_effect": _allocator.in_effect()}))

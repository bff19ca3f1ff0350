"""`scripts/compare_results.py`: does a rerun elsewhere agree with the README's run?"""

import copy
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_results",
                                              REPO / "scripts" / "compare_results.py")
compare_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_results)

NOTE = ("synth / FPN: DetNAS {d} AP50 over ClsNASNet; {v} the noise of the test split: the "
        "paired bootstrap 95% interval of the difference, [+1.0, +9.0], excludes 0.")


def _tables(ap=0.70, top1=0.93, diff="+5.0", verdict="outside"):
    row = {"row": "detnas", "map": {"fpn": ap}, "map_interval": {"fpn": [0.64, 0.76]},
           "top1": {"fpn": top1}, "arch": {"fpn": "00-00-0000-00"}}
    return {"tables": {"synth": {"detectors": ["fpn"], "rows": [row]}},
            "observations": [NOTE.format(d=diff, v=verdict)]}


@pytest.mark.parametrize(("other", "agrees"), [
    (_tables(ap=0.72, top1=0.95), True),  # inside the interval, top-1 within 3 points
    (_tables(ap=0.78), False),  # outside the reference's interval
    (_tables(top1=0.89), False),  # top-1 4 points away
    (_tables(diff="+2.0", verdict="within"), False),  # outside the noise in one only
    (_tables(diff="-5.0"), False),  # outside in both, opposite signs
])
def test_agreement_within_the_stated_noise(tmp_path, other, agrees, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_tables()))
    b.write_text(json.dumps(other))
    assert (compare_results.main([str(a), str(b)]) == 0) == agrees
    assert "checks agree" in capsys.readouterr().out


def test_bit_identical_tables(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_tables()))
    b.write_text(json.dumps(copy.deepcopy(_tables())))
    assert compare_results.main([str(a), str(b)]) == 0
    assert "bit-identical" in capsys.readouterr().out

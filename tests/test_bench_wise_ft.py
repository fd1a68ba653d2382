"""benchmarks/bench_wise_ft.py: the parts that decide what a sweep reports (arguments, the shared encoder,
the summaries); the end-to-end sweep is what the benchmark itself runs on a finished run."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_wise_ft as W  # noqa: E402


def test_alphas_are_checked_sorted_and_unique():
    assert W.parse_alphas("1, 0.5,0.25,0.5") == [0.25, 0.5, 1.0]
    for bad in ("0", "0.5,2", "x", ""):
        with pytest.raises((ValueError, argparse.ArgumentTypeError), match="--alphas"):
            W.parse_alphas(bad)
    args = W.parse_args(["--run", "r", "--set", "a=/x"])
    assert args.alphas == [0.25, 0.5, 0.75, 1.0] and args.prompts == ["box"] and args.sam_cases == 6


def test_bad_prompts_and_case_counts_exit_with_a_message(capsys):
    for argv, text in ((["--prompts", "box,point"], "--prompts"), (["--sam-cases", "0"], "--sam-cases")):
        with pytest.raises(SystemExit):
            W.parse_args(["--run", "r", *argv])
        assert text in capsys.readouterr().err


class _Backend:
    name = "fake"

    def __init__(self):
        self.seen = 0

    def encode(self, x):
        self.seen += 1
        return x * 2


def test_memo_encoder_runs_the_encoder_once_per_distinct_batch():
    inner = _Backend()
    memo = W.MemoEncoder(inner)
    a, b = torch.ones(2, 3), torch.zeros(2, 3)
    for _ in range(3):  # three alphas, same slices
        torch.testing.assert_close(memo.encode(a), a * 2)
    torch.testing.assert_close(memo.encode(b), b)
    assert inner.seen == 2 and memo.calls == 2 and memo.name == "fake"


def test_summaries_and_worst_set_by_hand():
    per_case = {
        "c1": {"0.5": {"sam_f_box": 0.8, "sam_f_box_zeroshot": 0.6}, "1": {"sam_f_box": 0.4}},
        "c2": {"0.5": {"sam_f_box": 0.6, "sam_f_box_zeroshot": 0.8}, "1": {"sam_f_box": 0.6}},
    }
    s = W.summarise(per_case)
    assert s["0.5"]["sam_f_box"] == {"mean": pytest.approx(0.7), "min": 0.6, "n": 2}
    assert s["1"]["sam_f_box"]["mean"] == pytest.approx(0.5)
    other = W.summarise({"c3": {"0.5": {"sam_f_box": 0.9}, "1": {"sam_f_box": 0.3}}})
    worst = W.worst({"a": {"summary": s}, "b": {"summary": other}})
    assert worst["0.5"]["sam_f_box"] == {"mean": pytest.approx(0.7), "set": "a"}
    assert worst["1"]["sam_f_box"] == {"mean": pytest.approx(0.3), "set": "b"}

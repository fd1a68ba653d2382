import pytest

from brainseg_utils import report


def _metrics(name="synthetic"):
    entry = {"per_case": {"dice": {"mean": 0.9, "ci95": [0.85, 0.95]}, "hd95": {"mean": 12.0}},
             "per_slice_tumour": {"dice": {"mean": 0.8}}, "false_positive_rate": {"value": 0.1},
             "latency_ms": {"median": 23.0, "device": "cpu"}, "prompt": "-"}
    box = {**entry, "prompt": "oracle GT box", "false_positive_rate": {"value": None}}
    return {"dataset": {"name": name, "n_test_cases": 2, "split_sha256": "f" * 64},
            "models": {"sam_x_box": box, "unet": entry}}


def test_table_is_labelled_and_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\noutro\n")
    report.update_readme(readme, _metrics())
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "Synthetic data, not BraTS" in text and "oracle upper bound" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `unet` | - | 0.900 (0.850–0.950) | 12.0 | 0.800 | 0.100 | 23 (cpu) |")
    assert "| n/a |" in rows[1]
    assert "BraTS 2020" in report.results_table(_metrics("brats2020"))


def test_missing_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here")
    with pytest.raises(ValueError, match="no <!-- results:start -->"):
        report.update_readme(readme, _metrics())

import pytest

from brainseg_utils.evaluation import report


def _metrics(name="synthetic", n=12):
    entry = {
        "per_case": {"dice": {"mean": 0.9, "ci95": [0.85, 0.95]}, "hd95": {"mean": 12.0}},
        "per_slice_tumour": {"dice": {"mean": 0.8}},
        "false_positive_rate": {"value": 0.1},
        "latency_ms": {"median": 23.0, "p90": 25.0, "device": "cpu"},
        "prompt": "-",
        "n_cases": n,
        "data": {"train_slices": 518, "val_slices": 64, "train_cases": 11},
    }
    box = {
        **entry,
        "prompt": "oracle GT box",
        "false_positive_rate": {"value": None},
        "per_case": {"dice": {"mean": 0.8, "ci95": None}, "hd95": {"mean": 9.0}},
        "data": {"train_slices": 0, "val_slices": 0, "train_cases": 0},
    }
    return {
        "dataset": {"name": name, "n_test_cases": n, "split_sha256": "f" * 64},
        "models": {"sam_x_box": box, "unet": entry},
        "provenance": {"commit": "0123456789abcdef", "dirty": False, "command": "PROFILE=quick bash run_all.sh"},
    }


def test_table_is_labelled_and_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\noutro\n")
    report.update_readme(readme, _metrics())
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "Synthetic data, not BraTS" in text and "oracle upper bound" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert (
        rows[0]
        == "| `unet` | - | 518 / 64 slices, 11 cases | 0.900 [0.850, 0.950] | 12.0 | 0.800 | 0.100 | 23 (25) (cpu) |"
    )
    assert rows[1].startswith("| `sam_x_box` | oracle GT box | pretrained only | 0.800 (CI n/a, n = 12) |")
    assert "| n/a (oracle) |" in rows[1]
    assert "`PROFILE=quick bash run_all.sh` at commit `0123456789ab`" in text
    assert "BraTS 2020" in report.results_table(_metrics("brats2020"))
    small = report.results_table(_metrics(n=2))
    assert "With 2 test patients, confidence intervals and p-values are not reported" in small
    assert "smallest p a paired Wilcoxon test could reach is 0.5" in small


def test_missing_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here")
    with pytest.raises(ValueError, match="no <!-- results:start -->"):
        report.update_readme(readme, _metrics())


def test_wise_ft_blends_are_stated_where_the_training_data_are():
    m = _metrics()
    tuned = {**m["models"]["unet"], "prompt": "none", "data": {**m["models"]["unet"]["data"], "wise_ft_alpha": 0.25}}
    plain = {**tuned, "data": {**tuned["data"], "wise_ft_alpha": 1.0}}
    m["models"].update(sam_x_none=tuned, sam_y_none=plain)
    rows = {r.split(" | ")[0]: r for r in report.results_table(m).splitlines() if r.startswith("| `")}
    assert "| 518 / 64 slices, 11 cases; WiSE-FT a = 0.25 |" in rows["| `sam_x_none`"]
    assert "| 518 / 64 slices, 11 cases |" in rows["| `sam_y_none`"], "a = 1: as trained, nothing to say"

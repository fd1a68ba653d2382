"""The ``unet_clean`` row (the U-Net's mask after the 3-D connected-component clean-up) in results.md and the
README: right after the U-Net, prompt "-", the threshold in the conventions, no latency (a whole-volume step)
written as such, and no "None" anywhere."""

from __future__ import annotations

from test_evaluate import _tables

from brainseg_utils.evaluation import report, results_table, statistics

CLEANUP = {
    "min_volume_mm3": 125.0,
    "chosen_on": "validation cases",
    "n_val_cases": 4,
    "candidates": {"0": 0.81, "500": 0.79, "125": 0.83},
}


def _metrics(cleanup: dict | None = CLEANUP, stats_for_clean: bool = False) -> dict:
    names = ("unet", "sam_vit_b_none", "sam_vit_b_box", "unet_clean", "sam_vit_b_unet_box")
    per_case, per_slice = _tables(2, names)
    summary = statistics.summarise(per_case, per_slice)
    data = {"train_slices": 100, "val_slices": 20, "train_cases": 7, "val_cases": 2}
    for name in summary:
        summary[name].update(
            prompt=results_table.prompt_of(name),
            latency_ms={"median": 5.0, "p90": 6.0, "device": "cpu"},
            data=data,
            backend="vit_b" if name.startswith("sam_") else None,
        )
    summary["unet_clean"]["latency_ms"] = None  # the clean-up runs on the whole volume: no batch-1 latency
    tested = per_case if stats_for_clean else per_case[per_case.model != "unet_clean"]
    metrics = {
        "dataset": {"name": "synthetic", "n_test_cases": 2, "split_sha256": "f" * 64},
        "models": summary,
        "statistics": statistics.paired_tests(tested),
        "conventions": {"dice": "x"},
        "latency_protocol": "y",
        "provenance": {"commit": "abc123", "dirty": False, "command": "bash run_all.sh"},
    }
    if cleanup is not None:
        metrics["cleanup"] = cleanup
    return metrics


def _main_rows(md: str) -> list[str]:
    return [line for line in md.split("\n## ")[0].splitlines() if line.startswith(("| unet", "| sam_", "| `"))]


def test_unet_clean_row_follows_the_unet_with_the_threshold_and_no_none():
    md = results_table.results_markdown(_metrics())
    rows = _main_rows(md)
    assert [r.split(" | ")[0] for r in rows] == [
        "| unet",
        "| unet_clean",
        "| sam_vit_b_none (primary SAM)",
        "| sam_vit_b_unet_box (primary SAM)",
    ]
    clean = rows[1].split(" | ")
    header = next(line for line in md.splitlines() if line.startswith("| model")).split(" | ")
    assert len(clean) == len(header) and clean[1] == "-" and clean[2] == "100 / 20 slices, 7 cases"
    assert rows[1].endswith("| n/a (whole-volume step) |  |"), "latency n/a; no Wilcoxon p without a test"
    assert " | 5.0 (6.0) cpu | " in rows[0]
    assert (
        "- unet_clean = the U-Net's mask with 3-D connected components smaller than 125 mm³ removed (125 mm³ chosen "
        "on the 4 validation cases, never the test split; validation mean Dice per candidate: 0 mm³ 0.810, "
        "125 mm³ 0.830, 500 mm³ 0.790)"
    ) in md
    assert "None" not in md
    readme = report.results_table(_metrics())
    names = [r.split(" | ")[0] for r in _main_rows(readme.split("**Upper bounds")[0])]
    assert names == ["| `unet`", "| `unet_clean`", "| `sam_vit_b_none`", "| `sam_vit_b_unet_box`"]
    clean_readme = next(r for r in readme.splitlines() if r.startswith("| `unet_clean`"))
    assert clean_readme.endswith("| n/a (whole-volume step) |") and "smaller than 125 mm³ removed" in readme
    assert "None" not in readme


def test_unet_clean_without_recorded_cleanup_and_with_a_test():
    md = results_table.results_markdown(_metrics(cleanup=None, stats_for_clean=True))
    assert "- unet_clean = the U-Net's mask with 3-D connected components smaller than a volume threshold" in md
    assert "never the test split; not recorded in this metrics.json" in md
    clean = next(r for r in _main_rows(md) if r.startswith("| unet_clean |"))
    # paired tests compare the U-Net with SAM variants only: the cleaned U-Net gets none, even when per_case has it
    assert clean.endswith("| n/a (whole-volume step) |  |")
    assert "unet_clean" not in _metrics(stats_for_clean=True)["statistics"]
    assert "None" not in md and "None" not in report.results_table(_metrics(cleanup=None))


def test_no_cleanup_line_without_unet_clean():
    metrics = _metrics()
    del metrics["models"]["unet_clean"], metrics["cleanup"]
    assert "unet_clean" not in results_table.results_markdown(metrics)
    assert "unet_clean" not in report.results_table(metrics)
    assert results_table.prompt_of("unet_clean") == "-"


def test_speed_and_memory_section_lists_automatic_models_per_volume():
    metrics = _metrics()
    vol = {"seconds": 1.234, "slices": 130, "peak_mb": 85.4, "memory": "resident set above the start"}
    for name in ("unet", "unet_clean", "sam_vit_b_none", "sam_vit_b_unet_box"):
        metrics["models"][name]["volume"] = dict(vol)
    metrics["models"]["sam_vit_b_none"]["latency_ms"]["precision"] = "encoder fp16, decoder fp32"
    metrics["models"]["unet"]["volume"]["peak_mb"] = None
    md = results_table.results_markdown(metrics)
    section = md.split("## Speed and memory")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split(" | ")[0] for r in rows] == ["| unet", "| unet_clean", "| sam_vit_b_none", "| sam_vit_b_unet_box"]
    assert "| sam_vit_b_none | encoder fp16, decoder fp32 | cpu, ? | 5.0 (6.0) | 1.23 (130) | 85 (resident set" in md
    assert "| unet_clean | fp32 | as the U-Net | n/a (whole-volume step) | 1.23 (130) |" in md
    assert rows[0].endswith("| n/a |") and "None" not in md
    assert "## Speed and memory" not in results_table.results_markdown(_metrics())  # no per-volume record


def test_the_best_value_of_each_column_is_bold_and_stated_once():
    metrics = _metrics()
    models = metrics["models"]
    models["unet_clean"]["per_case"]["dice"]["mean"] = 0.95  # the best Dice
    models["sam_vit_b_none"]["per_case"]["hd95"]["mean"] = 1.5  # the lowest HD95 wins
    models["sam_vit_b_none"]["latency_ms"] = {"median": 3.25, "p90": 4.0, "device": "cpu"}
    md = results_table.results_markdown(metrics)
    rows = {r.split(" | ")[0].removeprefix("| ").split(" ")[0]: r.split(" | ") for r in _main_rows(md)}
    assert rows["unet_clean"][3] == "**0.950**" and not rows["unet"][3].startswith("**")
    assert rows["sam_vit_b_none"][7] == "**1.5**" and rows["sam_vit_b_none"][16] == "**3.2 (4.0) cpu**"
    assert "**Bold**: the best value of each column" in md
    assert "CI n/a" not in md and "with 2 they are n/a" in md
    oracle_rows = md.split("## Upper bounds")[1].split("\n## ")[0]
    assert "**" not in oracle_rows, "one oracle row: nothing to compare with"

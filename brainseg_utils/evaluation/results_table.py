"""The results table (``results.md``, the README): how each number is written (CIs, n/a with the reason,
training data, p-values) and what each model's prompt is called."""

from __future__ import annotations

import numpy as np

from brainseg_utils.evaluation import protocol
from brainseg_utils.evaluation.lesionwise import NSD_COLUMN, NSD_TOLERANCE_MM
from brainseg_utils.evaluation.statistics import MIN_PATIENTS_FOR_STATS, is_oracle
from brainseg_utils.models.sam import pretraining


def fmt_ci(stats: dict, n: int) -> str:
    """ "0.900 [0.850, 0.950]"; "0.900" below ``MIN_PATIENTS_FOR_STATS`` patients (the table says once that no
    CI is reported); "0.900 (CI n/a, n = 12)" when n could carry a CI but this one is missing."""
    ci = stats.get("ci95")
    if ci and None not in ci and np.isfinite(ci[0]):
        return f"{stats['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{stats['mean']:.3f}" if n < MIN_PATIENTS_FOR_STATS else f"{stats['mean']:.3f} (CI n/a, n = {n})"


def fmt_median_iqr(stats: dict, digits: int = 1) -> str:
    """ "12.3 [8.1, 20.4]": median [25th, 75th percentile] over patients."""
    lo, hi = stats["iqr"]
    return f"{stats['median']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_fp(fp: dict) -> str:
    return "n/a (oracle)" if fp.get("value") is None else f"{fp['value']:.3f}"


def fmt_data(data: dict | None) -> str:
    """ "518 / 64 slices, 11 cases" (train / val slices, training cases), "; WiSE-FT a = 0.25" for a blended decoder."""
    d = data or {}
    if d.get("train_slices") is None:
        return "unknown"
    if d["train_slices"] == 0:
        return "pretrained only"
    blend = d.get("wise_ft_alpha")  # a SAM decoder used as a WiSE-FT blend (docs/models-and-training.md#sam)
    wise = f"; WiSE-FT a = {blend:g}" if blend is not None and blend < 1 else ""
    return f"{d['train_slices']} / {d['val_slices']} slices, {d['train_cases']} cases{wise}"


def fmt_p(test: dict | None) -> str:
    if not test:
        return ""
    if test.get("p_value") is None:
        return f"n/a (n = {test['n']}; min attainable p {test['min_attainable_p']:.3g})"
    return f"{test['p_value']:.3g} (min attainable {test['min_attainable_p']:.3g})"


def results_markdown(metrics: dict) -> str:
    ds = metrics["dataset"]
    label = (
        "SYNTHETIC data (not BraTS): these numbers say nothing about real scans"
        if ds["name"] == "synthetic"
        else "BraTS 2020 training data (held-out test split)"
    )
    n = ds["n_test_cases"]
    n_tests = max((t["n_tests"] for t in metrics["statistics"].values()), default=0)
    stats_line = (
        f"95% CIs (bootstrap over patients) and Wilcoxon p-values need >= {MIN_PATIENTS_FOR_STATS} test "
        f"patients; with {n} they are n/a: Dice (patient) is the mean over the {n} patients, without a CI."
        if n < MIN_PATIENTS_FOR_STATS
        else "Dice: mean [bootstrap 95% CI over patients]."
    )
    automatic, oracle = split_models(metrics)
    scope = ["This table holds the fully automatic models; the oracle-prompted SAM rows are the upper bounds below."]
    lines = [
        f"# Results: {label}",
        "",
        f"Dataset: **{ds['name']}**, {n} test patients, split sha256 `{ds['split_sha256'][:16]}…`.",
        "Per-patient 3-D metrics (headline), per-slice Dice on tumour slices and on all brain slices, "
        "false-positive rate on tumour-free slices, batch-1 end-to-end latency, and what each model learnt from "
        "(train / val slices, training cases).",
        "HD95 per patient as mean and as median [IQR]; BraTS 2023 lesion-wise Dice and HD95 (official rules), "
        f"normalised surface Dice at {NSD_TOLERANCE_MM:g} mm and false-positive volume (mL of predicted "
        "components sharing no voxel with the tumour) are per-patient means; every convention is listed below.",
        stats_line,
        "**Bold**: the best value of each column among the rows of its table (highest, or lowest for HD95, FP "
        "volume, FP rate and latency).",
        f"Paired Wilcoxon signed-rank tests vs the U-Net: {n_tests} tests on the same {n} patients "
        "(unadjusted here; the smallest p the exact test can reach is shown; Holm-adjusted p, differences and "
        "effect sizes: the paired comparisons below).",
        *(scope if oracle else []),
        "",
        *TABLE_HEAD,
    ]
    lines += table_rows(automatic, metrics)
    if oracle:
        lines += [
            "",
            "## Upper bounds (oracle prompts)",
            "",
            "These rows prompt SAM with the ground-truth box, which no automatic pipeline has: they bound what a "
            "perfect box would give and are not comparisons with the U-Net.",
            "",
            *TABLE_HEAD,
        ]
        lines += table_rows(oracle, metrics)
    lines += speed_lines(automatic)
    lines += paired_lines(metrics["statistics"])
    lines += settings_lines(metrics.get("settings") or {})
    lines += seed_and_pretraining_lines(metrics)
    prov = metrics.get("provenance", {})
    backends = metrics.get("sam_backends") or {}
    if backends:
        lines += ["", "SAM backends (which weights ran and why):"]
        lines += [f"- {b}: {v.get('why') or 'sha256 ' + str(v.get('checkpoint_sha256'))}" for b, v in backends.items()]
    lines += ["", "Conventions:"] + [f"- {k}: {v}" for k, v in metrics["conventions"].items()]
    lines += [
        "- box = ground-truth box: an ORACLE prompt, not a fair comparison with the U-Net (those rows are the upper "
        "bounds, in their own table); unet_box = box of the U-Net's prediction (fully automatic); none = no prompt.",
    ]
    if CLEAN in metrics["models"] or metrics.get("cleanup"):
        lines.append(f"- {CLEAN} = {cleanup_convention(metrics.get('cleanup'))}")
    lines += [
        f"- latency: {metrics['latency_protocol']}",
        f"- produced by `{prov.get('command', '?')}` at commit `{prov.get('commit', '?')}`"
        + (" (with uncommitted changes)" if prov.get("dirty") else ""),
        "",
    ]
    return "\n".join(lines)


def speed_lines(models: list[tuple[str, dict]]) -> list[str]:
    """ "## Speed and memory": per automatic model its arithmetic, batch-1 latency and one whole test volume's time
    and added peak memory (runs without a per-volume record: nothing)."""
    rows = [(name, m) for name, m in models if m.get("volume")]
    if not rows:
        return []
    out = [
        "",
        "## Speed and memory",
        "",
        "Batch 1 = one slice end to end; per volume = every brain slice of the last test volume as evaluation "
        "predicted it (batch 8; SAM's shared encoder pass split by the slices each variant needs), with the largest "
        "peak memory its stages added. Each model runs in the precision shown.",
        "",
        "| model | precision | device, runtime | batch-1 latency ms median (p90) | per volume s (slices) | "
        "peak memory added MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lat, vol = m.get("latency_ms") or {}, m["volume"]
        mem = "n/a" if vol.get("peak_mb") is None else f"{vol['peak_mb']:.0f} ({vol.get('memory', '')})"
        where = f"{lat['device']}, {lat.get('runtime', '?')}" if lat.get("device") else "as the U-Net"
        batch1 = f"{lat['median']:.1f} ({lat['p90']:.1f})" if lat.get("median") is not None else LATENCY_NA.get(name)
        precision = lat.get("precision") or ("fp32" if name == CLEAN else "n/a")
        out.append(
            f"| {name} | {precision} | {where} | {batch1 or 'n/a'} | {vol['seconds']:.2f} ({vol['slices']}) | {mem} |"
        )
    return out


TABLE_HEAD = (
    "| model | prompt | trained on | Dice (patient) | IoU | precision | recall | HD95 mm mean | "
    "HD95 mm median [IQR] | lesion-wise Dice | lesion-wise HD95 mm | NSD 2 mm | FP volume mL | "
    "Dice (tumour slices) | Dice (all slices) | FP rate | latency ms median (p90) | p (Wilcoxon vs U-Net) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
)
CLEAN = "unet_clean"  # the U-Net's mask after the 3-D connected-component clean-up (a whole-volume step)
LATENCY_NA = {CLEAN: "n/a (whole-volume step)"}  # why a model has no batch-1 latency


def model_cells(name: str, m: dict, metrics: dict) -> list[str]:
    """The cells of one row of the results table (main or upper bounds), in ``TABLE_HEAD`` order."""
    pc = m["per_case"]
    return [
        f"{name}{row_label(name, metrics)}", m["prompt"], fmt_data(m.get("data")), fmt_ci(pc["dice"], m["n_cases"]),
        f"{pc['iou']['mean']:.3f}", f"{pc['precision']['mean']:.3f}", f"{pc['recall']['mean']:.3f}",
        f"{pc['hd95']['mean']:.1f}", fmt_median_iqr(pc["hd95"]), f"{pc['lesion_dice']['mean']:.3f}",
        f"{pc['lesion_hd95']['mean']:.1f}", f"{pc[NSD_COLUMN]['mean']:.3f}", f"{pc['fp_ml']['mean']:.2f}",
        f"{m['per_slice_tumour']['dice']['mean']:.3f}", f"{m['per_slice']['dice']['mean']:.3f}",
        fmt_fp(m["false_positive_rate"]), fmt_latency(name, m.get("latency_ms")),
        fmt_p(metrics["statistics"].get(name)),
    ]  # fmt: skip


def model_row(name: str, m: dict, metrics: dict) -> str:
    """One row of the results table (main or upper bounds), nothing marked."""
    return "| " + " | ".join(model_cells(name, m, metrics)) + " |"


# column (TABLE_HEAD index) -> (the value compared, +1: higher is better / -1: lower is better)
BEST = {
    3: (lambda m: m["per_case"]["dice"]["mean"], 1),
    4: (lambda m: m["per_case"]["iou"]["mean"], 1),
    5: (lambda m: m["per_case"]["precision"]["mean"], 1),
    6: (lambda m: m["per_case"]["recall"]["mean"], 1),
    7: (lambda m: m["per_case"]["hd95"]["mean"], -1),
    8: (lambda m: m["per_case"]["hd95"]["median"], -1),
    9: (lambda m: m["per_case"]["lesion_dice"]["mean"], 1),
    10: (lambda m: m["per_case"]["lesion_hd95"]["mean"], -1),
    11: (lambda m: m["per_case"][NSD_COLUMN]["mean"], 1),
    12: (lambda m: m["per_case"]["fp_ml"]["mean"], -1),
    13: (lambda m: m["per_slice_tumour"]["dice"]["mean"], 1),
    14: (lambda m: m["per_slice"]["dice"]["mean"], 1),
    15: (lambda m: (m["false_positive_rate"] or {}).get("value"), -1),
    16: (lambda m: (m.get("latency_ms") or {}).get("median"), -1),
}


def best_rows(models: list[tuple[str, dict]], column: int) -> set[str]:
    """The names holding the best value of ``column`` (``BEST``; ties all marked); none when fewer than two rows
    have a value, or all values are equal."""
    value, sign = BEST[column]
    have = {}
    for name, m in models:
        try:
            v = value(m)
        except (KeyError, TypeError):
            v = None
        if v is not None and np.isfinite(v):
            have[name] = sign * float(v)
    if len(have) < 2 or len(set(have.values())) == 1:
        return set()
    top = max(have.values())
    return {name for name, v in have.items() if v == top}


def table_rows(models: list[tuple[str, dict]], metrics: dict) -> list[str]:
    """The rows of one table, the best value of each ``BEST`` column in bold."""
    rows = [model_cells(name, m, metrics) for name, m in models]
    for column in BEST:
        for name in best_rows(models, column):
            cells = rows[[n for n, _ in models].index(name)]
            cells[column] = f"**{cells[column]}**"
    return ["| " + " | ".join(cells) + " |" for cells in rows]


def fmt_latency(name: str, lat: dict | None) -> str:
    """ "5.0 (6.0) cpu, onnxruntime", or "n/a (whole-volume step)" for a model without a batch-1 latency."""
    if not lat or lat.get("median") is None:
        return LATENCY_NA.get(name, "n/a")
    p90 = f" ({lat['p90']:.1f})" if lat.get("p90") is not None else ""
    return f"{lat['median']:.1f}{p90} {lat.get('device', '')}{', ' + lat['runtime'] if lat.get('runtime') else ''}"


def cleanup_convention(cleanup: dict | None) -> str:
    """What ``unet_clean`` is: the threshold and where it was chosen (``metrics["cleanup"]``; absent in old runs)."""
    if not cleanup or cleanup.get("min_volume_mm3") is None:
        return (
            "the U-Net's mask with 3-D connected components smaller than a volume threshold removed (the threshold "
            "chosen on the validation cases, never the test split; not recorded in this metrics.json)"
        )
    x = f"{cleanup['min_volume_mm3']:g} mm³"
    on = cleanup.get("chosen_on") or "validation cases"
    n_val = f"{cleanup['n_val_cases']} " if cleanup.get("n_val_cases") is not None else ""
    line = (
        f"the U-Net's mask with 3-D connected components smaller than {x} removed ({x} chosen on the "
        f"{n_val}{on}, never the test split"
    )
    cands = cleanup.get("candidates") or {}
    if cands:
        tried = ", ".join(
            f"{float(k):g} mm³ {_fmt_num(v, '.3f')}" for k, v in sorted(cands.items(), key=lambda kv: float(kv[0]))
        )
        line += f"; validation mean Dice per candidate: {tried}"
    return line + ")"


PAIRED_LABEL = {"dice": ("Dice", 3), "hd95": ("HD95 mm", 1), "lesion_dice": ("lesion-wise Dice", 3)}


def fmt_diff(res: dict, digits: int) -> str:
    """ "0.050 [0.020, 0.080]" (mean paired difference [BCa 95% CI]); "0.050" below ``MIN_PATIENTS_FOR_STATS``
    patients (the section says once that CIs need them)."""
    if res.get("mean_difference") is None:
        return f"n/a (n = {res['n']})"
    ci, mean = res.get("ci95"), f"{res['mean_difference']:+.{digits}f}"
    if ci:
        return f"{mean} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"
    return mean if res["n"] < MIN_PATIENTS_FOR_STATS else f"{mean} (CI n/a, n = {res['n']})"


def _fmt_num(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def paired_lines(statistics: dict) -> list[str]:
    """The "Paired comparisons with the U-Net" table: one row per SAM variant and metric (``paired_tests``);
    no lines for a metrics.json written before paired differences existed."""
    rows = [(name, t) for name, t in statistics.items() if t.get("paired")]
    if not rows:
        return []
    lines = [
        "",
        "## Paired comparisons with the U-Net",
        "",
        "Difference = U-Net minus SAM variant, per patient (Dice > 0: the U-Net is better; HD95 > 0: the U-Net is "
        "worse). Mean difference [BCa bootstrap 95% CI, patients resampled in pairs]; two-sided Wilcoxon "
        "signed-rank p (zero differences dropped); Holm-adjusted p over the pre-declared comparisons of each "
        "metric (U-Net vs `sam_<b>_none` and vs `sam_<b>_unet_box`); oracle-box and zero-shot rows are "
        "exploratory, p unadjusted. Effect sizes: matched-pairs rank-biserial r (+1: every non-zero difference "
        f"positive) and Cohen's d_z. CIs, p and effect sizes need >= {MIN_PATIENTS_FOR_STATS} patients.",
        "",
        "| SAM variant | comparison | metric | n | U-Net − SAM: mean [BCa 95% CI] | median | Wilcoxon p | Holm p | "
        "rank-biserial r | Cohen's d_z |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in rows:
        for metric, res in t["paired"].items():
            label, digits = PAIRED_LABEL.get(metric, (metric, 3))
            holm_p = _fmt_num(
                res.get("p_holm"), ".3g", "— (exploratory)" if t["comparison"] != "pre-declared" else "n/a"
            )
            lines.append(
                f"| {name} | {t['comparison']} | {label} | {res['n']} | {fmt_diff(res, digits)} | "
                f"{_fmt_num(res.get('median_difference'), f'+.{digits}f')} | {_fmt_num(res.get('p_value'), '.3g')} | "
                f"{holm_p} | {_fmt_num(res.get('rank_biserial'), '+.2f')} | {_fmt_num(res.get('cohen_dz'), '+.2f')} |"
            )
    return lines


def settings_lines(settings: dict) -> list[str]:
    """What both models were trained on and what was cut to fit the session (``PROFILE=auto``)."""
    out = []
    step = settings.get("slice_step")
    if step and step > 1:
        out += ["", f"Training slices: one tumour slice in {step} (SLICE_STEP {step}), the same slices for both "
                "models; the test patients are evaluated on every brain slice."]  # fmt: skip
    if settings.get("cuts"):
        out += ["", f"Cut to fit the session (PROFILE={settings.get('profile')}, planned for "
                f"{settings.get('planned_for')}): "]  # fmt: skip
        out += [f"- {c['parameter']} {c['full']} -> {c['chosen']}: {c['cost']}" for c in settings["cuts"]]
    elif settings.get("profile") == "auto":
        out += ["", f"PROFILE=auto: the full settings fit the session (planned for {settings.get('planned_for')})."]
    return out


def _backends(metrics: dict) -> list[str]:
    """The SAM backends with rows in ``metrics`` (the primary one first)."""
    found = {m.get("backend") for m in metrics["models"].values()} - {None}
    return sorted(found, key=lambda b: (b != pretraining.PRIMARY_BACKEND, b))


def ordered_models(metrics: dict) -> list[tuple[str, dict]]:
    """(name, entry) with the U-Net first, then ``unet_clean`` (and any other model without a backend), then the
    primary backend's (ViT-B: natural images only) SAM rows, then the other backends' in their recorded order."""
    rank = {b: i for i, b in enumerate(_backends(metrics))}
    items = list(metrics["models"].items())

    def key(kv):
        name, m = kv
        return (-2 if name == "unet" else -1) if m.get("backend") is None else rank[m["backend"]]

    return sorted(items, key=key)


def split_models(metrics: dict) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(fully automatic rows, oracle-prompted rows), each in ``ordered_models`` order: the main table and the upper
    bounds (``statistics.is_oracle``: ground-truth box, fine-tuned or zero-shot)."""
    ordered = ordered_models(metrics)
    return [kv for kv in ordered if not is_oracle(kv[0])], [kv for kv in ordered if is_oracle(kv[0])]


def row_label(name: str, metrics: dict) -> str:
    """What follows a row's name: the pretraining mark (backend pretrained on BraTS) or "primary SAM"."""
    backend = metrics["models"][name].get("backend")
    if backend is None:
        return ""
    if pretraining.pretraining(backend).may_have_seen_test:
        return f" {pretraining.MARK}"
    return " (primary SAM)" if backend == pretraining.PRIMARY_BACKEND else ""


def seed_and_pretraining_lines(metrics: dict) -> list[str]:
    """The sections under the table: what each SAM backend was pretrained on (the mark's meaning) and how this
    run deviates from the seed's protocol (``protocol.section_lines``)."""
    lines = pretraining.section_lines(_backends(metrics), metrics["dataset"]["name"])
    return lines + protocol.section_lines(metrics.get("seed_protocol"))


PROMPT_LABEL = {
    "unet": "-",
    "none": "none",
    "box": "oracle GT box",
    "unet_box": "U-Net box",
    "box_zeroshot": "oracle GT box, zero-shot (not fine-tuned)",
}


def prompt_of(name: str) -> str:
    if name in ("unet", CLEAN):
        return PROMPT_LABEL["unet"]
    for suffix in ("unet_box", "box_zeroshot", "none", "box"):
        if name.endswith(f"_{suffix}"):
            return PROMPT_LABEL[suffix]
    raise ValueError(f"unknown model name {name!r}")

"""The plan cell of notebooks 02-04: this notebook's predicted time and whether the run fits the session.

Cheap by design: it reads the plan run_all.sh recorded for this run (``run.plan``); without one it plans on a
GPU (a calibration of seconds, cached) from the notebook's own parameters, and on a CPU only says how to get a
plan (calibrating there takes about a minute). On Colab / Kaggle a notebook predicted not to fit the session
stops here, before any work, unless ``ALLOW_OVER_SESSION`` is set (``%env ALLOW_OVER_SESSION=1``).
"""

from __future__ import annotations

import json

from brainseg_utils.plan.estimate import hours


class OverSessionError(RuntimeError):
    """The plan says this notebook (or the run) does not fit the session."""


def summary(plan: dict, notebook: str) -> str:
    label = "estimate" if plan.get("estimate") else "measured here"
    cuts = ", ".join(f"{c['parameter']} {c['full']}->{c['chosen']}" for c in plan.get("cuts", []))
    return (
        f"plan (profile {plan['profile']}, {plan['platform']}, {plan['device']} x{plan['gpus']}, {label}): "
        f"this notebook ~{hours(plan['notebooks'][notebook])}, all notebooks ~{hours(plan['total_seconds'])}; "
        + ("fits the session" if plan["fits"] else "does NOT fit: " + "; ".join(plan["why_not"]))
        + (f"; cut to fit: {cuts}" if cuts else "")
    )


def notebook_overrides(namespace: dict) -> dict:
    """The notebook's values of the parameters a profile may set (the rest stay at the full profile's)."""
    from brainseg_utils.parameters import profile_parameters

    return {k: namespace[k] for k in profile_parameters() if k in namespace}


def plan_check(run, notebook: str, namespace: dict, environ=None) -> dict | None:
    """Print this notebook's plan line; raise ``OverSessionError`` on a hosted platform when it does not fit
    and ``ALLOW_OVER_SESSION`` is not set. Returns the plan used (None: no plan on a CPU)."""
    import torch

    from brainseg_utils.runtime import env

    if run.plan.is_file():
        plan = json.loads(run.plan.read_text())
    elif torch.cuda.is_available():
        from brainseg_utils.plan.planner import make_plan

        plan = make_plan("full", overrides=notebook_overrides(namespace))
    else:
        print("no plan for this run: `python -m brainseg_utils.plan` predicts every notebook's time and disk here "
              "(about a minute of calibration on a CPU; run_all.sh plans by itself with PROFILE=auto)")  # fmt: skip
        return None
    print(summary(plan, notebook))
    if not plan["fits"] and plan["platform"] in ("kaggle", "colab") and env.platform() == plan["platform"]:
        fixes = "; ".join(s["change"] for s in plan.get("suggestions", []) if s.get("fits")) or "see the plan"
        if not env.allow_over_session(environ):
            raise OverSessionError(
                f"{notebook} is predicted not to fit this {plan['platform']} session ({'; '.join(plan['why_not'])}). "
                f"Changes that fit: {fixes}. Or run `%env ALLOW_OVER_SESSION=1` and this cell again to go on anyway."
            )
        print("ALLOW_OVER_SESSION is set: going on although the plan says the session may end first")
    return plan

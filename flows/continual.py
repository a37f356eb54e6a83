"""The continual-learning loop as Prefect flows: monitor (scheduled) -> drift event -> retrain (triggered).

The monitor flow runs the monitor stage on the newest live window; on a drift verdict it emits
`recloop.drift.detected` for the resource `recloop.monitor.<project>`, with the reasons, the
window's bounds and file, and the signals as payload. The retrain deployment carries a
`DeploymentEventTrigger` on that event (see `retrain_trigger`), so the event starts the retrain
flow with the payload as its `trigger` parameter; a schedule and `recloop retrain` run the same flow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.events import emit_event
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from components.config import load_params
from components.stages import monitor_stage

DRIFT_EVENT = "recloop.drift.detected"
RESOURCE_PREFIX = "recloop.monitor."


def drift_payload(summary: Any, current: Path) -> dict:
    """What the retrain flow learns about the drift: reasons, window bounds and file, signals (plain JSON)."""
    verdict = summary.to_dict()["verdict"]
    return {"reasons": verdict["reasons"], "window": {**verdict["current"], "file": str(current)},
            "signals": {name: {k: v for k, v in signal.items() if k in ("value", "threshold", "fired", "detail")}
                        for name, signal in verdict["signals"].items()},
            "run": summary.run}


@flow(name="monitor")
def monitor_flow(params_path: str = "params.yaml", overrides: list[str] | None = None,
                 reference: str | None = None, current: str | None = None) -> dict:
    """Monitor the current window (default: the newest live window) against the reference; on drift,
    emit the drift event. Returns the monitor summary as a dict, plus `event_id` when one was emitted.
    """
    params = load_params(params_path, overrides or [])
    done = monitor_stage(params, Path(reference) if reference else None, Path(current) if current else None)
    summary = done.summary
    out = {"run": summary.run, "drift": summary.verdict.drift, "reasons": list(summary.verdict.reasons),
           "event_id": None}
    if summary.verdict.drift:
        event = emit_event(event=DRIFT_EVENT,
                           resource={"prefect.resource.id": RESOURCE_PREFIX + params.monitor.project},
                           payload=drift_payload(summary, done.current))
        out["event_id"] = str(event.id) if event is not None else None
    return out


@flow(name="retrain")
def retrain_flow(params_path: str = "params.yaml", overrides: list[str] | None = None, window: str | None = None,
                 trigger: dict | None = None) -> dict:
    """Continual fine-tune, gate and (on a pass) promote: `recloop retrain` as a flow.

    `trigger` is the drift event's payload when the event started the run; its window file is used
    unless `window` names another.
    """
    from components.continual.retrain import retrain

    params = load_params(params_path, overrides or [])
    chosen = window or ((trigger or {}).get("window") or {}).get("file")
    summary = retrain(params, Path(chosen) if chosen else None, trigger)
    return {"run": summary.run, "promote": summary.decision.promote, "reasons": summary.decision.reasons,
            "version": summary.version, "report": str(summary.report)}


def retrain_trigger(project: str, params_path: str, overrides: list[str]) -> DeploymentEventTrigger:
    """Start the retrain deployment on each drift event of `project`, passing the event's payload."""
    return DeploymentEventTrigger(
        name="retrain on drift", expect={DRIFT_EVENT}, match={"prefect.resource.id": RESOURCE_PREFIX + project},
        # A single-expression template is rendered with `tojson`: the flow receives the payload as a dict.
        parameters={"params_path": params_path, "overrides": overrides, "trigger": "{{ event.payload }}"})

"""One federated job's status and summary, as ``fednode fl status JOB`` prints it for people.

Invariant: every value comes from the job's status file or its summary.json
unchanged (numbers only rounded for display); a field either file lacks is
left out, never guessed. Values are escaped, so a dataset or error text can
never be read as console markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.markup import escape

from node.timefmt import utc_text

__all__ = ["job_report"]

_STATE_COLOURS = {"finished": "green", "failed": "red", "interrupted": "yellow"}


def job_report(status: Mapping[str, Any]) -> str:
    """Rich-markup text describing the job ``status`` (with its ``summary``, if written)."""
    summary: Mapping[str, Any] = status.get("summary") or {}
    state = str(status.get("state", "unknown"))
    colour = _STATE_COLOURS.get(state, "cyan")
    outcome = summary.get("outcome")
    headline = f"[{colour}]{escape(state)}[/]" + (
        f", outcome {escape(str(outcome))}" if outcome else ""
    )
    job_id, name = escape(str(status.get("job_id"))), escape(str(status.get("name", "")))
    lines = [f"[bold]job {job_id}[/] ({name}): {headline}"]

    def field(label: str, value: str) -> None:
        lines.append(f"  {label:<13} {value}")

    app = status.get("app") or summary.get("app")
    if app:
        version = status.get("app_version") or summary.get("app_version") or ""
        fab = str(status.get("fab_sha256") or summary.get("fab_sha256") or "")
        field(
            "app",
            escape(f"{app} {version}".strip()) + (f" (FAB sha256 {fab[:12]}…)" if fab else ""),
        )
    field("started", _times(status, summary))
    rounds = summary.get("rounds")
    done = status.get("round")
    if rounds is not None or done is not None:
        field(
            "rounds",
            f"{done if done is not None else '-'} of {rounds if rounds is not None else '?'}",
        )
    if "secagg" in summary:
        field(
            "aggregation", "SecAgg+ (masked updates)" if summary["secagg"] else "plain (no SecAgg+)"
        )
    if summary:  # without a summary the privacy settings are unknown, not absent
        dp = summary.get("dp")
        field("privacy", _privacy(dp) if dp else "no differential privacy")
    participants = summary.get("participants")
    if participants:
        lines.append("  participants")
        for p in participants:
            lines.append("    " + _participant(p))
    elif status.get("participants"):
        field("participants", escape(", ".join(map(str, status["participants"]))))
    metrics = {k: v for k, v in (summary.get("final_metrics") or {}).items() if v}
    if metrics:
        lines.append("  final metrics")
        for stage, values in metrics.items():
            shown = ", ".join(f"{k}={_number(v)}" for k, v in values.items())
            lines.append(f"    {escape(str(stage))}: {escape(shown)}")
    if status.get("output"):
        field("results", escape(str(status["output"])) + " (model.npz, rounds.json, summary.json)")
    error = status.get("error") or summary.get("error")
    if error:
        lines.append(f"  [red]error[/]         {escape(str(error))}")
    return "\n".join(lines)


def _times(status: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    started = status.get("started_at") or summary.get("started_at")
    text = utc_text(started)
    finished = status.get("finished_at")
    if finished:
        text += f", finished {utc_text(finished)}"
    if summary.get("seconds") is not None:
        text += f" ({float(summary['seconds']):.1f} s)"
    return text


def _privacy(dp: Mapping[str, Any]) -> str:
    parts = [str(dp.get("mechanism", "dp"))]
    for key, label in (
        ("epsilon", "epsilon"),
        ("delta", "delta"),
        ("clipping_norm", "clipping norm"),
    ):
        if key in dp:
            parts.append(f"{label} {dp[key]}")
    return escape(", ".join(parts))


def _participant(p: Mapping[str, Any]) -> str:
    mark = "[green]joined[/]" if p.get("joined") else "[red]did not join[/]"
    rows = p.get("rows")
    detail = [f"{rows:,} rows" if isinstance(rows, int) else "", f"dataset {p.get('dataset')}"]
    if p.get("agreement"):
        detail.append(f"agreement {p['agreement']}")
    text = f"{escape(str(p.get('department'))):<16} {mark}  " + escape(
        ", ".join(d for d in detail if d)
    )
    if p.get("error"):
        text += f"  [red]{escape(str(p['error']))}[/]"
    return text


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

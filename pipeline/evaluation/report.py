"""report.json (the decision, every metric and threshold, every profile), report.md and its plots."""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from pipeline import prompt, storage
from pipeline.contracts import REPORT_JSON, REPORT_MD
from pipeline.evaluation.gates import GateResult
from pipeline.scoring.scorer import ScoreResult

SCATTER_PNG = "model_vs_teacher.png"
HISTOGRAM_PNG = "score_histograms.png"
LATENCY_PNG = "latency.png"
CHAMPION_PNG = "champion_vs_candidate.png"
REPORT_FORMAT = "researcher-scorer-report/v1"


def profile_rows(results: Sequence[ScoreResult], subset: str) -> list[dict[str, Any]]:
    return [
        {
            "set": subset,
            "handle": r.profile.handle,
            "teacher_score": r.profile.teacher_score,
            "teacher": r.profile.teacher,
            "model_score": r.score,
            "valid": r.ok,
            "error": r.error or None,
            "handle_matches": r.handle_matches,
            "reason": r.reason,
            "latency_s": round(r.latency_s, 4),
            "prompt_tokens": r.prompt_tokens,
            "answer_tokens": r.answer_tokens,
            **({"raw": r.raw} if not r.ok else {}),
        }
        for r in results
    ]


def build_report(
    *,
    model: str,
    backend: str,
    metrics: dict[str, Any],
    gates: Sequence[GateResult],
    thresholds: dict[str, float],
    holdout: Sequence[ScoreResult],
    seeds: Sequence[ScoreResult],
    gguf_sha256: str | None = None,
) -> dict[str, Any]:
    return {
        "format": REPORT_FORMAT,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": model,
        # The GGUF these figures are of: promotion, by the pipeline or an operator, refuses another.
        "gguf_sha256": gguf_sha256,
        "backend": backend,
        "passed": all(gate.passed for gate in gates),
        "failed_gates": [gate.name for gate in gates if not gate.passed],
        "gates": [asdict(gate) for gate in gates],
        "thresholds": thresholds,
        "metrics": metrics,
        "profiles": profile_rows(holdout, "holdout") + profile_rows(seeds, "seeds"),
    }


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plots(
    holdout: Sequence[ScoreResult], seeds: Sequence[ScoreResult], champion_holdout: Sequence[ScoreResult] | None = None
) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib.figure import Figure

    images = {}
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    valid = [r for r in holdout if r.ok]
    valid_seeds = [r for r in seeds if r.ok]
    axes.scatter([r.profile.teacher_score for r in valid], [r.score or 0.0 for r in valid], s=10, alpha=0.6, label="holdout")
    axes.scatter(
        [r.profile.teacher_score for r in valid_seeds], [r.score or 0.0 for r in valid_seeds], s=14, marker="^", alpha=0.8, label="seeds"
    )
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    axes.set(xlabel="teacher score", ylabel="model score", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title="Model vs teacher (valid answers)")
    axes.legend(loc="upper left")
    images[SCATTER_PNG] = _png(figure)

    figure = Figure(figsize=(7, 3.5))
    left, right = figure.subplots(1, 2, sharey=False)
    bins = [i / 20 for i in range(21)]
    left.hist([r.profile.teacher_score for r in holdout], bins=bins, alpha=0.6, label="teacher")
    left.hist([r.score for r in holdout if r.ok], bins=bins, alpha=0.6, label="model")
    left.set(title="Holdout scores", xlabel="score")
    left.legend()
    right.hist([r.score for r in seeds if r.ok], bins=bins, color="tab:green")
    right.set(title="Seed-profile scores (model)", xlabel="score")
    images[HISTOGRAM_PNG] = _png(figure)

    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    axes.hist([r.latency_s for r in [*holdout, *seeds]], bins=30)
    axes.set(title="Latency per profile", xlabel="seconds", ylabel="profiles")
    images[LATENCY_PNG] = _png(figure)

    if champion_holdout:
        from pipeline.evaluation.gates import effective_score

        figure = Figure(figsize=(5, 5))
        axes = figure.subplots()
        candidate = {r.profile: r for r in holdout}  # the champion scored the gated profiles only
        theirs = [abs(effective_score(r) - r.profile.teacher_score) for r in champion_holdout]
        ours = [abs(effective_score(candidate[r.profile]) - r.profile.teacher_score) for r in champion_holdout]
        axes.scatter(theirs, ours, s=10, alpha=0.6)
        axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        axes.set(
            xlabel="production model's error |score - teacher|",
            ylabel="candidate's error",
            xlim=(-0.02, 1.02),
            ylim=(-0.02, 1.02),
            title="Same holdout profiles: below the line, the candidate is closer",
        )
        images[CHAMPION_PNG] = _png(figure)
    return images


def _fmt(value: Any) -> str:
    if value is None:
        return "undefined"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def markdown_text(value: Any) -> str:
    """Untrusted text (a handle, a model's answer) as inert Markdown: one line without control or
    bidi characters, HTML escaped, every Markdown metacharacter backslash-escaped (a `|` cannot end
    a table cell, a backtick cannot open code, `<script>` is text)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(prompt.clean_text(value), quote=False))


def markdown(report: dict[str, Any]) -> str:
    metrics = report["metrics"]
    lines = [
        f"# Validation of `{report['model']}`",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}** — backend {report['backend']}, "
        f"{metrics['profiles']} profiles ({metrics.get('holdout_answered', metrics['holdout_profiles'])} holdout answered, "
        f"{metrics['holdout_profiles']} of them gated; {metrics['seed_profiles']} seeds), "
        f"{report['created_at']}",
        "",
        "| gate | value | threshold | result |",
        "| --- | --- | --- | --- |",
    ]
    for gate in report["gates"]:
        verdict = "pass" if gate["passed"] else f"**fail**{' — ' + gate['detail'] if gate['detail'] else ''}"
        lines.append(f"| {gate['name']} | {_fmt(gate['value'])} | {gate['comparison']} {gate['threshold']} | {verdict} |")
    lines += [
        "",
        f"Spearman {_fmt(metrics['spearman'])}, mean absolute error {_fmt(metrics['mae'])}; "
        f"{metrics['valid_answers']} valid answers, {metrics.get('request_failures', 0)} requests without an answer "
        f"(not counted as scores); tokens per profile: prompt {_fmt(metrics['prompt_tokens_mean'])}, "
        f"answer {_fmt(metrics['answer_tokens_mean'])} (max {_fmt(metrics['answer_tokens_max'])}).",
        "",
        *agreement_markdown(metrics),
        *stability_markdown(metrics.get("seed_gate_stability")),
        f"![model vs teacher]({SCATTER_PNG})",
        f"![score histograms]({HISTOGRAM_PNG})",
        f"![latency]({LATENCY_PNG})",
        "",
    ]
    lines += champion_markdown(metrics.get("champion"))
    invalid = [row for row in report["profiles"] if not row["valid"]]
    if invalid:
        lines += ["## Invalid answers", "", "| set | handle | error | answer |", "| --- | --- | --- | --- |"]
        for row in invalid[:50]:
            cells = (row["set"], row["handle"], row["error"], prompt.truncate(prompt.clean_text(row.get("raw") or ""), 120)[0])
            lines.append("| " + " | ".join(markdown_text(cell) for cell in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def agreement_markdown(metrics: dict[str, Any]) -> list[str]:
    """Pearson per teacher; the gated one marked (teacher names are the table's, untrusted)."""
    by_teacher = metrics.get("pearson_by_teacher") or {}
    if not by_teacher:
        return []
    gated = metrics.get("gated_teacher")
    lines = [
        "",
        "Agreement per teacher (every holdout prompt names "
        f"`{markdown_text(gated or 'its own teacher')}`, as production's do; the correlation and champion gates read "
        f"{'the marked teacher' if gated else 'all'}):",
        "",
        "| teacher | profiles | Pearson | MAE |",
        "| --- | --- | --- | --- |",
    ]
    for teacher, figures in by_teacher.items():
        mark = " (gated)" if teacher == gated else ""
        lines.append(
            f"| {markdown_text(teacher or 'unknown')}{mark} | {figures['profiles']} | {_fmt(figures['pearson'])} | {_fmt(figures['mae'])} |"
        )
    return [*lines, ""]


def stability_markdown(stability: dict[str, Any] | None) -> list[str]:
    """How the seed gates' figures move with the decoding seed (the gates read the first, pinned)."""
    if not stability:
        return []

    def row(name: str) -> str:
        values = ", ".join(_fmt(value) for value in stability[name])
        return f"{name} {values} (median {_fmt(stability['median_' + name])})"

    seeds = ", ".join(str(seed) for seed in stability["decoding_seeds"])
    return [
        f"Seed gates under decoding seeds {seeds} (the gates read the first, which production serves): "
        f"{row('seed_mean')}; {row('seed_min')}.",
        "",
    ]


def champion_markdown(comparison: dict[str, Any] | None) -> list[str]:
    lines = ["## Champion / challenger", ""]
    if comparison is None:
        return [*lines, "No model in production yet: nothing to compare with; the champion gates pass.", ""]

    def interval(bounds) -> str:
        return "undefined" if bounds is None else f"[{bounds[0]:+.3f}, {bounds[1]:+.3f}]"

    return [
        *lines,
        f"The same {comparison['profiles']} holdout profiles (those the correlation gate reads) scored by the candidate and by "
        f"`{markdown_text(comparison['champion'])}` (in production); 95 % bootstrap intervals on candidate minus production.",
        "",
        "| | candidate | production | difference | 95 % interval |",
        "| --- | --- | --- | --- | --- |",
        f"| Pearson with the teacher | {_fmt(comparison['candidate_pearson'])} | {_fmt(comparison['champion_pearson'])} | "
        f"{_fmt(comparison['pearson_delta'])} | {interval(comparison['pearson_delta_interval'])} |",
        f"| mean absolute error | {_fmt(comparison['candidate_mae'])} | {_fmt(comparison['champion_mae'])} | "
        f"{_fmt(comparison['mae_delta'])} | {interval(comparison['mae_delta_interval'])} |",
        "",
        f"![champion vs candidate]({CHAMPION_PNG})",
        "",
    ]


def write_report(
    out_uri: str,
    report: dict[str, Any],
    holdout: Sequence[ScoreResult],
    seeds: Sequence[ScoreResult],
    champion_holdout: Sequence[ScoreResult] | None = None,
) -> dict[str, str]:
    """Write the plots, report.md and report.json (last: its presence marks a complete report)."""
    written = {}
    for name, data in plots(holdout, seeds, champion_holdout).items():
        written[name] = storage.join(out_uri, name)
        storage.write_bytes(written[name], data)
    written[REPORT_MD] = storage.join(out_uri, REPORT_MD)
    storage.write_bytes(written[REPORT_MD], markdown(report).encode("utf-8"))
    written[REPORT_JSON] = storage.join(out_uri, REPORT_JSON)
    storage.write_json(written[REPORT_JSON], report)
    return written

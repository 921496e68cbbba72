"""Generate the README's results block from a real run, so the README states only what a run produced.

``make readme`` rewrites what lies between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in
README.md from ``runs/latest/metrics.json``, ``run.json`` and ``report_card.json``.

Tolerates metrics.json with or without the ``verdict`` block
(``{"synthetic_helps", "comparisons": [{arm, control, delta, ci95, p_value, p_adjusted, seed_ci95,
significant}], "method"}``); without it the plain ``comparisons`` list is shown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mammosynth import atomic

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"


def _fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{float(x):.{digits}f}"


def _p(x: Any) -> str:
    """A p-value as a reader expects it: ``< 0.001`` rather than ``0.000``."""
    return "n/a" if x is None else ("< 0.001" if float(x) < 0.001 else f"{float(x):.3f}")


def _ci(ci: Any) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if isinstance(ci, list | tuple) and len(ci) == 2 else "n/a"


def _comparison_lines(metrics: dict[str, Any]) -> list[str]:
    verdict = metrics.get("verdict")
    lines: list[str] = []
    if isinstance(verdict, dict):
        helps = verdict.get("synthetic_helps")
        answer = {True: "yes", False: "no", None: "not enough seeds to say"}.get(helps, str(helps))
        headline = str(metrics.get("conclusion") or "").strip().split("\n")[0]
        headline = headline.removeprefix("Does synthetic data help?").strip()
        lines.append(
            f"**Does synthetic data help? {answer}** (`verdict.synthetic_helps` = `{helps}`). {headline}"
        )
        lines.append("")
        for c in verdict.get("comparisons", []):
            lines.append(
                f"- `{c.get('arm')}` vs its matched control `{c.get('control')}`: "
                f"ΔAUC {_fmt(c.get('delta'))} "
                f"(95% CI {_ci(c.get('ci95'))}; across-seed CI {_ci(c.get('seed_ci95'))}), "
                f"DeLong p {_p(c.get('p_value'))}, Holm-adjusted p {_p(c.get('p_adjusted'))}; "
                f"significant gain: {'yes' if c.get('significant') else 'no'}"
            )
        lines.append("")
        lines.append(f"Method: {verdict.get('method', 'not recorded')}")
        return lines
    for c in metrics.get("comparisons", []):
        lines.append(
            f"- `{c.get('arm')}` vs `{c.get('baseline')}`: ΔAUC {_fmt(c.get('delta'))} "
            f"(95% CI {_ci(c.get('ci95'))}), p = {_p(c.get('p_value'))} ({c.get('test', 'test n/a')})"
        )
    return lines


def _card_lines(card: dict[str, Any] | None) -> list[str]:
    if not card:
        return ["Generator report card: not in this run."]
    overall = card.get("overall", {})
    manifold = overall.get("manifold") or {}
    floor = overall.get("manifold_floor_heldout_halves") or {}
    return [
        f"Generator report card ({card.get('features', 'features n/a')}): "
        f"precision {_fmt(manifold.get('precision'), 2)} / recall {_fmt(manifold.get('recall'), 2)} "
        "against the real-vs-real floor's "
        f"{_fmt(floor.get('precision'), 2)} / {_fmt(floor.get('recall'), 2)}; FID "
        f"{_fmt(overall.get('fid_synthetic_vs_heldout'), 2)} against a floor of "
        f"{_fmt(overall.get('fid_floor_heldout_halves'), 2)}; KID {_fmt(overall.get('kid_synthetic_vs_heldout'), 4)} "
        f"(floor {_fmt(overall.get('kid_floor_heldout_halves'), 4)})."
    ]


def _timing_lines(run: dict[str, Any]) -> list[str]:
    stages = run.get("stages")
    total = run.get("study_seconds", run.get("wall_time_s"))
    head = f"Measured timings: study {_fmt(total, 0)} s" + (" (kfp.local)" if run.get("orchestrator") else "")
    if not isinstance(stages, dict) or not stages:
        return [head + "; per-stage times not recorded in this run."]
    parts = []
    for name, s in stages.items():
        wall = s.get("wall_seconds", s.get("seconds"))
        share = float(wall) / float(total) if wall is not None and total else float(s.get("share") or 0)
        part = f"{name} {_fmt(wall, 0)} s ({100 * share:.0f}%)"
        if (s.get("runs") or 1) > 1:  # a ParallelFor stage: its iterations' compute time summed
            part += f" [{s['runs']} parallel runs, {_fmt(s.get('seconds'), 0)} s summed]"
        parts.append(part)
    return [head + ": " + ", ".join(parts) + "."]


def render(metrics: dict[str, Any], run: dict[str, Any], card: dict[str, Any] | None) -> str:
    """Return the Markdown of the results block (without the markers).

    Args:
        metrics: the run's metrics.json.
        run: the run's run.json (preset, source, commit, finished_at, stages...).
        card: the run's report_card.json, or None.
    """
    preset = metrics.get("preset", run.get("preset", "?"))
    source = run.get("source", "?")
    phantom = source == "embedded"
    test = metrics.get("test_set", {})
    lines = [
        f"Generated by `make readme` from run `{run.get('run_id', '?')}`: preset `{preset}`, source `{source}`"
        + (" (**phantom** data, not real mammograms)" if phantom else "")
        + f", commit `{run.get('commit', 'not recorded')}`, finished {run.get('finished_at', 'date not recorded')}.",
        f"Split seed {metrics.get('seed')}, seeds per arm {metrics.get('seeds')}; split sizes "
        f"{json.dumps(metrics.get('split_sizes'))}; {'phantom ' if phantom else ''}test set n = {test.get('n')} "
        f"({test.get('n_malignant')} malignant, {test.get('n_benign')} benign).",
        "",
        "| arm | AUC (mean over seeds) | 95% CI | accuracy |",
        "|---|---|---|---|",
    ]
    for name, arm in metrics.get("arms", {}).items():
        ci = arm.get("summary", {}).get("auc", {}).get("ci95")
        lines.append(f"| `{name}` | {_fmt(arm.get('auc'))} | {_ci(ci)} | {_fmt(arm.get('accuracy'))} |")
    lines += ["", *_comparison_lines(metrics), "", *_card_lines(card), "", *_timing_lines(run)]
    return "\n".join(lines)


def rewrite(readme: str, block: str) -> str:
    """Replace what lies between the markers of ``readme`` with ``block``.

    Raises:
        ValueError: the markers are missing or out of order, naming them.
    """
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {BEGIN} ... {END} block; add the two markers where the results go")
    return readme[: start + len(BEGIN)] + "\n" + block + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``python -m mammosynth.readme``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    p = argparse.ArgumentParser(prog="mammosynth readme", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/latest"), help="run folder")
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    args = p.parse_args(argv)
    metrics_path = args.run / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} missing: run `make run` first (or pass --run <run folder>)")
    metrics = json.loads(metrics_path.read_text())
    run = json.loads((args.run / "run.json").read_text()) if (args.run / "run.json").is_file() else {}
    card_path = args.run / "report_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else None
    text = rewrite(args.readme.read_text(encoding="utf-8"), render(metrics, run, card))
    atomic.write_text(args.readme, text)
    print(f"{args.readme}: results block rewritten from {args.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Report stage: ``report.md`` and a self-contained ``report.html`` a clinician or reviewer can read.

Both files are rendered from one document model (a list of sections of paragraphs, tables, images
and code blocks), so they always say the same thing. Markdown links images relative to the report
(copying any image from elsewhere into ``assets/``); HTML embeds them as base64 so the single file
can be mailed around. Optional inputs that are missing (figures, sample grids, the generator's
report card, context keys) turn into "not available" in their section, never into a crash.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammosynth import figures as figs
from mammosynth.config import LABEL_CONVENTION
from mammosynth.evaluate import (
    CONTRACT_KEYS,
    METRICS_FILE,
    TEST_PREDICTIONS_FILE,
    build_verdict,
    conclusion,
    write_text_atomic,
)
from mammosynth.provenance import test_set_name

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
NOT_AVAILABLE = "not available"

# The student study's own numbers, shown for context only (different data handling, no CIs).
PUBLISHED = [
    ("Simple CNN (real only)", "0.55", "not reported", "single run"),
    ("InceptionResNetV2 (real only)", "0.71", "0.75", "single run"),
    (
        "InceptionResNetV2 + 550 cGAN images",
        "not reported",
        "0.76 (average over trials)",
        "their best trial, AUC 0.89, is cherry-picked and not comparable",
    ),
]

FIGURE_TITLES = {
    "roc": "ROC curves (thick: seed ensemble; thin: individual seeds)",
    "seed_auc": "Test AUC per seed with the mean and its 95% CI over seeds",
    "forest": "Δ AUC against the baselines with 95% CIs",
    "external_forest": "Δ AUC against the baselines on the external test set, with 95% CIs (DeLong on the seed "
    "ensemble; across-seed t-interval)",
    "confusion": "Confusion matrices (seed ensemble)",
    "roc_band": "ROC curves with bootstrap bands",
    "reliability": "Reliability diagram",
    "pr": "Precision–recall curves",
    "subgroups": "Subgroup AUC forest",
    "learning_curves": "Learning curves (loss and AUC per epoch over seeds)",
    "gan_curves": "GAN losses, D outputs and the per-step sample strip",
}


# ----------------------------------------------------------------------------- document model
@dataclass
class Block:
    """One block of a report section, rendered the same way to Markdown and HTML.

    ``text`` is a paragraph, note, code or image caption; ``headers``/``rows`` a table (a list keeps
    one item per row); ``path`` an image relative to the report directory (embedded in the HTML).
    """

    kind: str  # "p" | "table" | "img" | "code" | "note" | "list"
    text: str = ""
    headers: Sequence[str] = ()
    rows: Sequence[Sequence[Any]] = ()
    path: str | None = None  # image path relative to the report directory
    id: str | None = None  # HTML id (the first screen's table is found by it)


@dataclass
class Section:
    """A titled report section: an ordered list of blocks, built with the chaining methods below."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2
    id: str | None = None  # HTML id of the section
    collapsed: bool = True  # HTML: a closed <details> (the first screen's sections set False)

    def p(self, text: str) -> Section:
        """Append a paragraph (``**bold**`` is honoured); return the section."""
        self.blocks.append(Block("p", text))
        return self

    def note(self, text: str) -> Section:
        """Append a highlighted note (a blockquote); return the section."""
        self.blocks.append(Block("note", text))
        return self

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], id: str | None = None) -> Section:
        """Append a table (``id``: its HTML id); return the section."""
        self.blocks.append(Block("table", headers=list(headers), rows=[list(r) for r in rows], id=id))
        return self

    def items(self, texts: Sequence[str]) -> Section:
        """Append a bulleted list, one item per text; return the section."""
        self.blocks.append(Block("list", rows=[[t] for t in texts]))
        return self

    def img(self, caption: str, path: str) -> Section:
        """Append a figure (``path`` relative to the report directory); return the section."""
        self.blocks.append(Block("img", text=caption, path=path))
        return self

    def code(self, text: str) -> Section:
        """Append a preformatted JSON block; return the section."""
        self.blocks.append(Block("code", text))
        return self


def fmt(value: Any, digits: int = 3) -> str:
    """Human formatting: floats to ``digits`` decimals (4 significant if tiny/huge), None → n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if value != 0 and (abs(value) < 10**-digits or abs(value) >= 1e5):
            return f"{value:.4g}"
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(fmt(v, digits) for v in value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _ci(ci: Sequence[Any] | None, signed: bool = False) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "n/a"
    f = (lambda v: f"{v:+.3f}") if signed else (lambda v: f"{v:.3f}")
    return f"[{f(ci[0])}, {f(ci[1])}]"


def _signed(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _p(p: Any) -> str:
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _mean_sd(summary: Mapping[str, Any] | None) -> str:
    if not summary or summary.get("mean") is None:
        return "n/a"
    if summary.get("sd") is None:
        return f"{summary['mean']:.3f} (1 seed)"
    return f"{summary['mean']:.3f} ± {summary['sd']:.3f}"


# ----------------------------------------------------------------------------- generic dict rendering
def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def dict_blocks(section: Section, data: Mapping[str, Any], prefix: str = "") -> None:
    """Render any dict into ``section``.

    Scalars go in a key/value table, dicts of scalars in their own tables, dicts of dicts in a matrix
    (rows = outer keys), anything deeper as JSON. Keys are shown as given.
    """
    scalars = [
        (k, v)
        for k, v in data.items()
        if _is_scalar(v) or (isinstance(v, (list, tuple)) and all(_is_scalar(x) for x in v))
    ]
    if scalars:
        section.table(["field", "value"], [[f"{prefix}{k}", fmt(v, 4)] for k, v in scalars])
    for key, value in data.items():
        if not isinstance(value, Mapping):
            if not (
                _is_scalar(value) or (isinstance(value, (list, tuple)) and all(_is_scalar(x) for x in value))
            ):
                section.p(f"**{prefix}{key}**")
                section.code(json.dumps(value, indent=2, sort_keys=True, default=str))
            continue
        if not value:
            section.p(f"**{prefix}{key}**: (empty)")
        elif all(isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values()) for v in value.values()):
            cols: list[str] = []
            for inner in value.values():
                cols += [c for c in inner if c not in cols]
            section.p(f"**{prefix}{key}**")
            section.table(
                [str(key), *cols], [[k, *(fmt(v.get(c), 4) for c in cols)] for k, v in value.items()]
            )
        elif all(_is_scalar(v) for v in value.values()):
            section.p(f"**{prefix}{key}**")
            section.table(["field", "value"], [[k, fmt(v, 4)] for k, v in value.items()])
        else:
            section.p(f"**{prefix}{key}**")
            section.code(json.dumps(value, indent=2, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- images
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "image"


def _place_image(path: str | os.PathLike, out_dir: Path, name: str) -> str | None:
    """Path of an image relative to the report; images outside ``out_dir`` are copied into assets/."""
    src = Path(path)
    if not src.is_file():
        log.warning("image %s not found; its place in the report says '%s'", src, NOT_AVAILABLE)
        return None
    try:
        return src.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        dest = out_dir / "assets" / f"{_slug(name)}{src.suffix or '.png'}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest.relative_to(out_dir).as_posix()


# ----------------------------------------------------------------------------- sections
def _delta_cell(comps: Sequence[Mapping[str, Any]], arm: str, base: str) -> str:
    for c in comps:
        if c["arm"] == arm and c["baseline"] == base:
            return f"{c['delta']:+.3f} {_ci(c['ci95'], True)}, p {_p(c['p_value'])}"
        if c["arm"] == base and c["baseline"] == arm:
            return f"{-c['delta']:+.3f} (reverse of {base} vs {arm})"
    return "—" if arm == base else NOT_AVAILABLE


def _headline(metrics: Mapping[str, Any]) -> Section:
    sec = Section("Headline")  # the whole conclusion; its first paragraph is the verdict above
    text = metrics.get("conclusion") or conclusion(metrics)
    for para in text.split("\n\n"):
        sec.p(para)
    return sec


def _arm_table(metrics: Mapping[str, Any]) -> Section:
    arms = metrics.get("arms") or {}
    comps = metrics.get("comparisons") or []
    sec = Section("Results per arm")
    if not arms:
        return sec.p(f"Arm results: {NOT_AVAILABLE}.")
    baselines = ["real", "real+aug"]
    sec.p(
        "As in the study: train accuracy, test accuracy and AUC per arm — here the mean over seeds "
        "(± SD across seeds), never the best seed. The 95% CI over seeds is a Student-t interval; "
        "the ensemble AUC averages each case's probability over seeds, with a stratified bootstrap CI "
        "over test cases. Δ AUC is arm − baseline on the seed ensemble with DeLong's test."
    )
    rows = []
    for name, a in arms.items():
        summ = a.get("summary") or {}
        ens = a.get("ensemble") or {}
        ens_auc = (ens.get("metrics") or {}).get("auc")
        rows.append(
            [
                name,
                a.get("n_seeds"),
                _mean_sd(summ.get("train_accuracy")),
                _mean_sd(summ.get("accuracy")),
                _mean_sd(summ.get("auc")),
                _ci((summ.get("auc") or {}).get("ci95")),
                f"{fmt(ens_auc)} {_ci((ens.get('ci95') or {}).get('auc'))}",
                *(_delta_cell(comps, name, b) for b in baselines),
            ]
        )
    sec.table(
        [
            "arm",
            "seeds",
            "train accuracy",
            "test accuracy",
            "test AUC (mean ± SD)",
            "AUC 95% CI (seeds)",
            "ensemble AUC [95% CI]",
            "Δ AUC vs real [95% CI], p",
            "Δ AUC vs real+aug [95% CI], p",
        ],
        rows,
    )
    return sec


def _other_metrics(metrics: Mapping[str, Any]) -> Section:
    arms = metrics.get("arms") or {}
    other = Section("Other test metrics (mean ± SD over seeds)", level=3)
    keys = ["sensitivity", "specificity", "f1", "balanced_accuracy", "val_auc"]
    other.table(
        ["arm", *keys],
        [[n, *(_mean_sd((a.get("summary") or {}).get(k)) for k in keys)] for n, a in arms.items()],
    )
    other.p(
        f"Threshold for the thresholded metrics: P(malignant) ≥ {fmt(metrics.get('threshold', 0.5), 2)}; "
        "sensitivity is the share of malignant masses called malignant."
    )
    return other


def _comparison_table(metrics: Mapping[str, Any]) -> Section:
    comps = metrics.get("comparisons") or []
    comp_sec = Section("Paired comparisons", level=3)
    if comps:
        comp_sec.p(
            "Each row is tested three ways. The primary test (first columns) decides the headline; a gain "
            "is called significant only if the across-seed interval also excludes 0."
        )
        comp_sec.table(
            [
                "arm",
                "baseline",
                "Δ AUC",
                "95% CI",
                "p",
                "test",
                "per-seed Δ (mean)",
                "95% CI",
                "p",
                "test",
                "bootstrap 95% CI",
                "bootstrap p",
            ],
            [
                [
                    c["arm"],
                    c["baseline"],
                    f"{c['delta']:+.3f}",
                    _ci(c["ci95"], True),
                    _p(c["p_value"]),
                    c["test"],
                    _signed((c.get("per_seed") or {}).get("delta")),
                    _ci((c.get("per_seed") or {}).get("ci95"), True),
                    _p((c.get("per_seed") or {}).get("p_value")),
                    (c.get("per_seed") or {}).get("test", NOT_AVAILABLE),
                    _ci((c.get("bootstrap") or {}).get("ci95"), True),
                    _p((c.get("bootstrap") or {}).get("p_value")),
                ]
                for c in comps
            ],
        )
    else:
        comp_sec.p(f"Comparisons: {NOT_AVAILABLE} (fewer than two arms, or no baseline arm evaluated).")
    return comp_sec


def _seed_table(metrics: Mapping[str, Any]) -> Section:
    arms = metrics.get("arms") or {}
    seeds = Section("Per-seed results", level=3)
    seed_rows = []
    for n, a in arms.items():
        for s, v in (a.get("per_seed") or {}).items():
            seed_rows.append(
                [
                    n,
                    s,
                    fmt(v.get("train_accuracy")),
                    fmt(v.get("val_auc")),
                    fmt(v.get("accuracy")),
                    fmt(v.get("auc")),
                    fmt(v.get("sensitivity")),
                    fmt(v.get("specificity")),
                ]
            )
    seeds.table(
        [
            "arm",
            "seed",
            "train accuracy",
            "val AUC",
            "test accuracy",
            "test AUC",
            "sensitivity",
            "specificity",
        ],
        seed_rows,
    )
    return seeds


def _results(metrics: Mapping[str, Any]) -> list[Section]:
    """The detailed per-arm sections (below the first screen)."""
    if not metrics.get("arms"):
        return [_arm_table(metrics)]
    return [_arm_table(metrics), _other_metrics(metrics), _comparison_table(metrics), _seed_table(metrics)]


def _figure_section(
    title: str, keys: Sequence[str], placed: Mapping[str, str | None], captions: Mapping[str, str]
) -> Section:
    sec = Section(title)
    _fig_blocks(sec, [k for k in keys if k in placed or k in FIGURE_TITLES], placed, captions)
    return sec


def _confusion(metrics: Mapping[str, Any], placed: Mapping[str, str | None], captions) -> Section:
    sec = _figure_section("Confusion matrices", ["confusion"], placed, captions)
    rows = [
        [n, c["tn"], c["fp"], c["fn"], c["tp"]]
        for n, a in (metrics.get("arms") or {}).items()
        if (c := (a.get("ensemble") or {}).get("confusion"))
    ]
    if rows:
        sec.table(
            [
                "arm",
                "TN (benign → benign)",
                "FP (benign → malignant)",
                "FN (malignant → benign)",
                "TP (malignant → malignant)",
            ],
            rows,
        )
    return sec


def _samples(sample_grids: Mapping[str, Any] | None, out_dir: Path) -> Section:
    sec = Section("Synthetic samples next to real ones")
    if not sample_grids:
        return sec.p(f"Sample grids: {NOT_AVAILABLE} (no generator was trained, or no grids were passed).")
    for key, value in sample_grids.items():
        if isinstance(value, Mapping):
            for sub, path in value.items():
                rel = _place_image(path, out_dir, f"samples-{key}-{sub}") if path else None
                if rel:
                    sec.img(f"{key} — {sub}", rel)
                else:
                    sec.p(f"{key} — {sub}: {NOT_AVAILABLE}.")
        else:
            rel = _place_image(value, out_dir, f"samples-{key}") if value else None
            if rel:
                sec.img(str(key), rel)
            else:
                sec.p(f"{key}: {NOT_AVAILABLE}.")
    return sec


def _report_card(card: Mapping[str, Any] | None) -> Section:
    sec = Section("Generator report card")
    if not card:
        return sec.p(f"Generator report card: {NOT_AVAILABLE}.")
    sec.p(
        "Image-quality and privacy checks of the synthetic set as computed by the generator stage "
        "(e.g. FID/KID against the real-vs-real floor, precision/recall, memorisation share, diversity)."
    )
    scalars = {k: v for k, v in card.items() if _is_scalar(v)}
    # each nested entry's scalar fields (overall FID vs floor, the memorisation audit and its rule)
    flat = {
        k: {f: x for f, x in v.items() if _is_scalar(x)}
        for k, v in card.items()
        if isinstance(v, Mapping) and any(_is_scalar(x) for x in v.values())
    }
    dict_blocks(sec, {**scalars, **flat})
    sec.p("Nested entries (per-class values, flagged indices, figure lists) are in the appendix.")
    return sec


def _data_figures(data_figures: Mapping[str, str | os.PathLike] | None, out_dir: Path) -> Section:
    sec = Section("The data")
    if not data_figures:
        return sec.p(f"Data figures: {NOT_AVAILABLE}.")
    for caption, path in data_figures.items():
        rel = _place_image(path, out_dir, f"data-{caption}")
        if rel:
            sec.img(str(caption), rel)
        else:
            sec.p(f"{caption}: {NOT_AVAILABLE}.")
    return sec


def _data_and_reproducibility(metrics: Mapping[str, Any], context: Mapping[str, Any]) -> Section:
    sec = Section("Data, seeds and how to re-run")
    ts = metrics.get("test_set") or {}
    sec.table(
        ["field", "value"],
        [
            ["test images (real, held out)", fmt(ts.get("n"))],
            ["malignant / benign", f"{fmt(ts.get('n_malignant'))} / {fmt(ts.get('n_benign'))}"],
            ["test image ids (sha256 of the sorted list)", fmt(ts.get("ids_sha256"))],
            ["seeds", fmt(metrics.get("seeds"))],
            [
                "bootstrap resamples / seed",
                f"{fmt(metrics.get('n_bootstrap'))} / {fmt(metrics.get('bootstrap_seed'))}",
            ],
            ["decision threshold", fmt(metrics.get("threshold"))],
        ],
    )
    arms = metrics.get("arms") or {}
    if arms:
        sec.p("**Training set sizes per arm** (first seed)")
        sec.table(
            ["arm", "real training images", "synthetic training images"],
            [[n, fmt(a.get("n_train_real")), fmt(a.get("n_train_synthetic"))] for n, a in arms.items()],
        )
    hashes = {n: a["predictions_sha256"] for n, a in arms.items() if a.get("predictions_sha256")}
    if hashes:
        sec.p("**Inputs**: sha256 (first 12 hex digits) of each arm's per-seed predictions.csv")
        seeds = sorted({s for h in hashes.values() for s in h}, key=lambda s: (len(s), s))
        sec.table(
            ["arm", *(f"seed {s}" for s in seeds)],
            [[n, *((h.get(s) or "—")[:12] for s in seeds)] for n, h in hashes.items()],
        )
    versions = (metrics.get("provenance") or {}).get("versions")
    if versions:
        sec.p("**Versions used by the evaluate stage**")
        sec.table(["package", "version"], [[k, fmt(v)] for k, v in versions.items()])
    if context:
        sec.p(
            "**Run context** (split, input versions/hashes, package versions and the config to re-run, "
            "as recorded by the pipeline): see the appendix."
        )
        if context.get("re-run"):
            sec.p(f"Re-run: `{context['re-run']}`")
    else:
        sec.p(f"Run context (split, input hashes, versions, config): {NOT_AVAILABLE}.")
    return sec


def _published() -> Section:
    sec = Section("The study's published numbers (context, not our result)")
    sec.note(
        "These are the student study's own figures, reported without confidence intervals and "
        "without a patient-level split; they are not produced by this run and are not directly "
        "comparable with the table above."
    )
    sec.table(["model (published study)", "test accuracy", "AUC", "note"], PUBLISHED)
    return sec


def _methods(metrics: Mapping[str, Any]) -> Section:
    sec = Section("Statistical methods")
    st = metrics.get("statistics")
    if not st:
        return sec.p(f"Method notes: {NOT_AVAILABLE}.")
    sec.table(["aspect", "method"], [[k.replace("_", " "), v] for k, v in st.items()])
    return sec


# ----------------------------------------------------------------------------- first screen
def _answer(v: Mapping[str, Any]) -> str:
    helps = v.get("synthetic_helps")
    if helps is None:
        return "**Does synthetic data help? Not enough evidence to say** (no synthetic arm, or fewer than 2 seeds)."
    return (
        "**Does synthetic data help? Yes.**"
        if helps
        else "**Does synthetic data help? No significant gain.**"
    )


def _verdict_section(metrics: Mapping[str, Any]) -> Section:
    sec = Section("Verdict", id="verdict", collapsed=False)
    v = metrics.get("verdict") or build_verdict(metrics.get("comparisons") or [])
    text = metrics.get("conclusion") or conclusion(metrics)
    sec.p(_answer(v))
    first = text.split("\n\n")[0]
    head, sep, detail = first.partition(" Matched comparisons: ")
    # the question is answered in bold above; the sentence's own evidence follows
    sec.p(f"{head.split('? ', 1)[-1]}{sep}{detail}" if sep else first)
    agreement = (metrics.get("external") or {}).get("agreement")
    if agreement:
        sec.p(agreement["sentence"])
    return sec


def _warnings_section(warns: Sequence[Mapping[str, Any]]) -> Section:
    sec = Section("Warnings", id="warnings", collapsed=False)
    if not warns:
        return sec.p("No warnings: no phantom data, enough seeds, no collapsed seed, no memorisation flag.")
    return sec.items([f"**{w['kind'].replace('_', ' ')}**: {w['message']}" for w in warns])


def _table_rows(metrics: Mapping[str, Any]) -> list[list[Any]]:
    matched = {e["arm"]: e for e in (metrics.get("verdict") or {}).get("comparisons") or []}
    controls = {e["control"] for e in matched.values()}
    rows = []
    for name, a in (metrics.get("arms") or {}).items():
        auc = (a.get("summary") or {}).get("auc") or {}
        e = matched.get(name)
        if e:
            delta = f"{e['delta']:+.3f} {_ci(e['ci95'], True)} vs {e['control']}"
            p_adj = _p(e.get("p_adjusted")) + (
                " (significant)" if e.get("significant") else " (not significant under the verdict rule)"
            )
        else:
            delta, p_adj = ("— (matched control)" if name in controls else "—"), "—"
        rows.append([name, a.get("n_seeds"), f"{fmt(auc.get('mean'))} {_ci(auc.get('ci95'))}", delta, p_adj])
    return rows


def _results_table(metrics: Mapping[str, Any]) -> Section:
    sec = Section("Results", id="results", collapsed=False)
    if not metrics.get("arms"):
        return sec.p(f"Arm results: {NOT_AVAILABLE}.")
    sec.table(
        ["arm", "seeds", "test AUC mean [95% CI over seeds]", "Δ AUC vs matched control [95% CI]", "Holm p"],
        _table_rows(metrics),
        id="results-table",
    )
    ts = metrics.get("test_set") or {}
    return sec.p(
        f"{test_set_name(metrics.get('data_source')).capitalize()}: {fmt(ts.get('n'))} held-out masses "
        f"({fmt(ts.get('n_malignant'))} malignant); "
        "Δ on the seed ensemble with DeLong's CI, p Holm-adjusted over the matched comparisons."
    )


def _external_section(
    metrics: Mapping[str, Any], placed: Mapping[str, str | None], captions: Mapping[str, str]
) -> Section | None:
    """The "External test set" section: the results table of the external set, and whether verdicts agree."""
    ext = metrics.get("external")
    if not ext or not ext.get("arms"):
        return None
    sec = Section("External test set", id="external", collapsed=False)
    headers = ["arm", "seeds", "external AUC mean [95% CI over seeds]", "Δ AUC vs matched control [95% CI]"]
    sec.table(
        [*headers, "Holm p"],
        _table_rows(ext),
        id="external-table",
    )
    ts = ext.get("test_set") or {}
    rec = ext.get("set") or {}
    where = f" from {rec['source']} ({rec.get('data_source') or 'unknown'} data)" if rec.get("source") else ""
    shared = rec.get("patients_also_internal")
    overlap = (
        f" {shared} of its patients also sit in the internal set, so it is not independent of it."
        if shared
        else (" None of its patients sit in the internal set." if shared == 0 else "")
    )
    sec.p(
        f"External test set{where}: {fmt(ts.get('n'))} images ({fmt(ts.get('n_malignant'))} malignant; "
        f"malignant = 1 is the positive class), predicted by every seed model of every arm; it chose nothing "
        f"(no model, epoch or hyperparameter).{overlap}"
    )
    if ext.get("agreement"):
        sec.p(f"**{ext['agreement']['sentence']}**")
    if placed.get("external_forest"):
        sec.img(captions.get("external_forest", FIGURE_TITLES["external_forest"]), placed["external_forest"])
    return sec


def _forest_section(placed: Mapping[str, str | None], captions: Mapping[str, str]) -> Section:
    sec = Section("Matched comparisons", id="forest", collapsed=False)
    if placed.get("forest"):
        return sec.img(captions.get("forest", "forest"), placed["forest"])
    return sec.p(f"Forest plot: {NOT_AVAILABLE}.")


# ----------------------------------------------------------------------------- clinical sections
def _ci_text(est: Any, ci: Sequence[Any] | None) -> str:
    return "n/a" if est is None else f"{fmt(est)} {_ci(ci)}"


def _fig_blocks(
    sec: Section, keys: Sequence[str], placed: Mapping[str, str | None], captions: Mapping[str, str]
):
    for key in keys:
        if placed.get(key):
            sec.img(captions.get(key, FIGURE_TITLES.get(key, key)), placed[key])
        else:
            sec.p(f"{FIGURE_TITLES.get(key, key)}: {NOT_AVAILABLE}.")


def _operating_points(readout: Mapping[str, Any]) -> Section:
    sec = Section("Clinical operating points")
    rows = []
    for arm, r in readout["arms"].items():
        op = r["ensemble"]["operating_points"]
        t = op["at_threshold"]
        rows.append(
            [
                arm,
                _ci_text(op["sens_at_spec"]["estimate"], op["sens_at_spec"]["ci"]),
                _ci_text(op["spec_at_sens"]["estimate"], op["spec_at_sens"]["ci"]),
                _ci_text(t["sensitivity"], t["sensitivity_ci95"]),
                _ci_text(t["specificity"], t["specificity_ci95"]),
                f"{fmt(r['mean_over_seeds']['sens_at_spec'])} / {fmt(r['mean_over_seeds']['spec_at_sens'])}",
            ]
        )
    thr = fmt(next(iter(readout["arms"].values()))["threshold"], 2) if readout["arms"] else "n/a"
    sec.p(
        "Seed ensemble of each arm (probabilities averaged over seeds). Fixed-specificity / fixed-sensitivity "
        f"points on the empirical ROC with {readout['n_boot']} stratified bootstrap resamples (seed "
        f"{readout['seed']}); threshold {thr} points with Wilson intervals."
    )
    return sec.table(
        [
            "arm",
            "sensitivity at 90% specificity [95% CI]",
            "specificity at 90% sensitivity [95% CI]",
            f"sensitivity at {thr} [95% CI]",
            f"specificity at {thr} [95% CI]",
            "mean over seeds (sens@90%spec / spec@90%sens)",
        ],
        rows,
    )


def _calibration(readout: Mapping[str, Any], placed, captions) -> Section:
    sec = Section("Calibration and precision–recall")
    rows = [
        [
            arm,
            fmt(r["ensemble"]["calibration"]["brier"]),
            fmt(r["ensemble"]["calibration"]["ece"]),
            fmt(r["mean_over_seeds"]["brier"]),
            fmt(r["mean_over_seeds"]["ece"]),
            fmt(r["ensemble"]["pr"]["average_precision"]),
            fmt(r["mean_over_seeds"]["average_precision"]),
        ]
        for arm, r in readout["arms"].items()
    ]
    sec.table(
        [
            "arm",
            "Brier (ensemble)",
            "ECE (ensemble)",
            "Brier (mean over seeds)",
            "ECE (mean over seeds)",
            "AP (ensemble)",
            "AP (mean over seeds)",
        ],
        rows,
    )
    _fig_blocks(sec, ["reliability", "pr"], placed, captions)
    return sec


def _subgroup_rows(rows: Sequence[Mapping[str, Any]], delta: bool) -> list[list[Any]]:
    out = []
    for r in rows:
        row = [
            r["factor"],
            r["level"],
            r["n"],
            f"{r['n_malignant']} / {r['n_benign']}",
            _ci_text(r["auc"], r["ci95"]),
        ]
        if delta:
            row += [fmt(r["auc_baseline"]), f"{_signed(r['delta'])} {_ci(r['delta_ci95'], True)}"]
        out.append([*row, "too small (no CI)" if r["too_small"] else ""])
    return out


def _subgroups(readout: Mapping[str, Any], placed, captions) -> Section:
    sec = Section("Subgroups")
    comps = readout.get("subgroup_comparisons") or []
    if not comps and not any(r.get("subgroups") for r in readout["arms"].values()):
        return sec.p(f"Subgroups: {NOT_AVAILABLE} (no case metadata (index.csv) was given).")
    sec.p(
        f"AUC by mass shape, margin, breast density, subtlety and view on the seed ensemble; subgroups with "
        f"fewer than {readout['min_subgroup_size']} cases (or too few of one class) are marked, not hidden."
    )
    for c in comps:
        sec.p(f"**{c['arm']} vs {c['baseline']}**")
        sec.table(
            [
                "factor",
                "level",
                "n",
                "malignant / benign",
                f"AUC {c['arm']} [95% CI]",
                f"AUC {c['baseline']}",
                "Δ AUC [95% CI]",
                "note",
            ],
            _subgroup_rows(c["rows"], True),
        )
    if not comps:
        for arm, r in readout["arms"].items():
            sec.p(f"**{arm}**")
            sec.table(
                ["factor", "level", "n", "malignant / benign", "AUC [95% CI]", "note"],
                _subgroup_rows(r["subgroups"] or [], False),
            )
    _fig_blocks(sec, ["subgroups"], placed, captions)
    return sec


def _training_curves(placed, captions) -> Section:
    sec = Section("Training curves")
    _fig_blocks(sec, ["learning_curves", "gan_curves"], placed, captions)
    return sec


def _clinical_sections(readout: Mapping[str, Any] | None, placed, captions) -> list[Section]:
    if not readout or not readout.get("arms"):
        return [Section("Clinical operating points").p(f"Clinical readout: {NOT_AVAILABLE}.")]
    return [
        _operating_points(readout),
        _calibration(readout, placed, captions),
        _subgroups(readout, placed, captions),
        _training_curves(placed, captions),
    ]


def _appendix(context: Mapping[str, Any], card: Mapping[str, Any] | None) -> Section:
    sec = Section("Appendix: machine-readable run record")
    sec.p("The same facts are in metrics.json, report_card.json and run.json next to this report.")
    if context:
        sec.p("**Run context**")
        dict_blocks(sec, context)
    if card:
        sec.p("**Generator report card (full)**")
        dict_blocks(sec, card)
    return sec


# ----------------------------------------------------------------------------- renderers
def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """Markdown of the document model, in the same order as the HTML (first screen, then sections)."""
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"{'#' * sec.level} {sec.title}", ""]
        for b in sec.blocks:
            if b.kind == "p":
                out += [b.text, ""]
            elif b.kind == "note":
                out += [f"> {b.text}", ""]
            elif b.kind == "list":
                out += [*(f"- {row[0]}" for row in b.rows), ""]
            elif b.kind == "code":
                out += ["```json", b.text, "```", ""]
            elif b.kind == "img":
                out += [f"![{b.text}]({b.path})", "", f"*{b.text}*", ""]
            elif b.kind == "table":
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "---|" * len(b.headers))
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                out.append("")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:1.2em auto;
padding:0 1em;color:#1d2733;line-height:1.45}
h1{border-bottom:2px solid #2b6cb0;padding-bottom:.2em;font-size:1.55em;margin:.2em 0 .5em}
h2{margin:1em 0 .4em;color:#2b6cb0;font-size:1.25em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #cbd5e0;padding:.3em .55em;text-align:left;vertical-align:top}
th{background:#edf2f7}tr:nth-child(even) td{background:#f7fafc}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e2e8f0}
#forest figure img{max-height:420px}
figcaption{font-size:.85em;color:#4a5568}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:.6em;overflow-x:auto;font-size:.82em;max-height:30em}
blockquote{border-left:4px solid #ed8936;margin:.8em 0;padding:.3em .8em;background:#fffaf0}
#verdict{background:#ebf4ff;border-left:5px solid #2b6cb0;padding:.2em 1em}
#verdict p:first-of-type{font-size:1.1em}
#warnings{background:#fff5f5;border-left:5px solid #c53030;padding:.2em 1em}
#warnings.none{background:#f0fff4;border-left-color:#2f855a}
#warnings ul{margin:.3em 0;padding-left:1.2em}
details{border-top:1px solid #e2e8f0;padding:.2em 0}
details>summary{cursor:pointer;list-style-position:outside;margin-left:1em}
details>summary h2,details>summary h3{display:inline;margin:0}
"""


def _inline_md(text: str) -> str:
    """HTML-escape, then honour the one markdown emphasis the sections use (**bold**)."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def _html_block(b: Block, out_dir: Path) -> str:
    if b.kind == "p":
        return f"<p>{_inline_md(b.text)}</p>"
    if b.kind == "note":
        return f"<blockquote>{_inline_md(b.text)}</blockquote>"
    if b.kind == "list":
        return "<ul>" + "".join(f"<li>{_inline_md(str(r[0]))}</li>" for r in b.rows) + "</ul>"
    if b.kind == "code":
        return f"<pre>{html.escape(b.text)}</pre>"
    if b.kind == "img":
        data = base64.b64encode((out_dir / b.path).read_bytes()).decode("ascii")
        mime = "image/png" if b.path.lower().endswith(".png") else "image/jpeg"
        return (
            f"<figure><img alt='{html.escape(b.text)}' src='data:{mime};base64,{data}'>"
            f"<figcaption>{html.escape(b.text)}</figcaption></figure>"
        )
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in b.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b.rows
    )
    tid = f" id='{html.escape(b.id)}'" if b.id else ""
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(title: str, sections: Sequence[Section], out_dir: Path) -> str:
    """One self-contained HTML page: first-screen sections open, the rest closed ``<details>``.

    Args:
        title: page title.
        sections: the document model.
        out_dir: report folder (image paths are relative to it; images are embedded as data URIs).

    Returns:
        The HTML text.
    """
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    for sec in sections:
        sid = f" id='{html.escape(sec.id)}'" if sec.id else ""
        cls = (
            " class='none'" if sec.id == "warnings" and not any(b.kind == "list" for b in sec.blocks) else ""
        )
        heading = f"<h{sec.level}>{html.escape(sec.title)}</h{sec.level}>"
        body = "\n".join(_html_block(b, out_dir) for b in sec.blocks)
        if sec.collapsed:
            parts.append(f"<details{sid}><summary>{heading}</summary>\n{body}\n</details>")
        else:
            parts.append(f"<section{sid}{cls}>{heading}\n{body}\n</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- Kubeflow UI artifacts
# The UI shows a Markdown/HTML artifact on its own, without the run folder, so relative image links break:
# the artifact copies embed every figure as a data URI, up to this many bytes of images in all.
ARTIFACT_IMAGE_BUDGET = 4 * 1024 * 1024
_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}
_MD_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)")
_HTML_IMAGE = re.compile(r"<img\b[^>]*?\bsrc=(?P<q>['\"])(?P<src>.*?)(?P=q)[^>]*>")
_ALT = re.compile(r"\balt=(['\"])(?P<alt>.*?)\1")


def _image_bytes(src: str, base_dir: Path) -> tuple[bytes | None, str, str]:
    """``(data, mime, why_not)`` of an image: a data URI's payload or a file under ``base_dir``."""
    if src.startswith("data:"):
        head, _, payload = src.partition(",")
        return base64.b64decode(payload), head[5:].split(";")[0], ""
    path = (base_dir / src).resolve()
    if not path.is_relative_to(base_dir.resolve()) or not path.is_file():
        return None, "", f"{src} is not a file in the run folder"
    mime = _MIME.get(path.suffix.lower())
    if not mime:
        return None, "", f"{src} is not a PNG, JPEG, GIF or SVG image"
    return path.read_bytes(), mime, ""


def embed_figures(
    text: str, base_dir: str | os.PathLike, *, html_doc: bool, max_bytes: int = ARTIFACT_IMAGE_BUDGET
) -> tuple[str, dict[str, Any]]:
    """Every image of a report as a data URI, so the document shows its figures on its own.

    Images are taken in document order (the first screen first) until ``max_bytes`` of image data is
    reached; later ones, and links that are not an image file inside ``base_dir``, become a one-line note
    pointing to the run folder, so no image reference is left that the Kubeflow UI cannot show.

    Args:
        text: ``report.md`` (``![alt](src)``) or ``report.html`` (``<img src=...>``) text.
        base_dir: the folder relative links are resolved against (the run folder).
        html_doc: True for HTML, False for Markdown.
        max_bytes: the most image bytes embedded in all.

    Returns:
        ``(text, {"embedded": n, "bytes": total, "omitted": [src...]})``.
    """
    base = Path(base_dir)
    info: dict[str, Any] = {"embedded": 0, "bytes": 0, "omitted": []}

    def replace(match: re.Match) -> str:
        src = match.group("src")
        if html_doc:
            alt_match = _ALT.search(match.group(0))
            alt = html.unescape(alt_match.group("alt")) if alt_match else "figure"
        else:
            alt = match.group("alt") or "figure"
        data, mime, why = _image_bytes(src, base)
        if data is not None and info["bytes"] + len(data) > max_bytes:
            why = (
                f"its {len(data) / 1024:.0f} KB would take the embedded figures past "
                f"{max_bytes / 2**20:.1f} MB"
            )
        if why:
            where = "report.html" if src.startswith("data:") else src
            info["omitted"].append(where)
            note = f"Figure '{alt}' is not embedded here ({why}); see {where} in the run folder."
            return f"<em>{html.escape(note)}</em>" if html_doc else f"*{note}*"
        info["embedded"] += 1
        info["bytes"] += len(data)
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        return match.group(0).replace(src, uri, 1) if html_doc else f"![{alt}]({uri})"

    out = (_HTML_IMAGE if html_doc else _MD_IMAGE).sub(replace, text)
    if info["omitted"]:
        log.warning(
            "report artifact: %d figure(s) not embedded (%s); they stay in the run folder",
            len(info["omitted"]),
            ", ".join(info["omitted"]),
        )
    return out, info


def write_ui_artifacts(
    run_dir: str | os.PathLike, md_path: str | os.PathLike, html_path: str | os.PathLike, **kwargs: Any
) -> dict[str, Any]:
    """Write the Kubeflow UI's Markdown and HTML artifacts: the run folder's reports with embedded figures.

    The run folder's ``report.md`` keeps its relative links (for a README or GitHub); the copies written
    here embed every figure (`embed_figures`, up to its size budget).

    Args:
        run_dir: the run folder holding ``report.md``, ``report.html`` and their figures.
        md_path: where the Markdown artifact goes.
        html_path: where the HTML artifact goes.
        **kwargs: passed to `embed_figures` (``max_bytes``).

    Returns:
        ``{"markdown": embed info, "html": embed info}``.
    """
    run = Path(run_dir)
    result = {}
    for key, name, dst, is_html in (
        ("markdown", REPORT_MD, md_path, False),
        ("html", REPORT_HTML, html_path, True),
    ):
        source = (run / name).read_text(encoding="utf-8")
        text, result[key] = embed_figures(source, run, html_doc=is_html, **kwargs)
        write_text_atomic(dst, text)
    return result


def _place_all(figures, clinical_figures, metrics, out: Path) -> tuple[dict, dict]:
    """Place every figure under the report folder; captions from `figures.caption` or the Figure."""
    placed: dict[str, str | None] = {}
    captions: dict[str, str] = {}
    for k, v in (figures or {}).items():
        if v:
            placed[k] = _place_image(v, out, f"figure-{k}")
            captions[k] = figs.caption(k, metrics) if k in figs.FIGURE_FILES else FIGURE_TITLES.get(k, k)
    for k, f in (clinical_figures or {}).items():
        placed[k] = _place_image(f.path, out, f"figure-{k}")
        captions[k] = f.caption
    return placed, captions


def write_report(
    out_dir: str | os.PathLike,
    *,
    metrics: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    figures: Mapping[str, str | os.PathLike] | None = None,
    sample_grids: Mapping[str, Any] | None = None,
    report_card: Mapping[str, Any] | None = None,
    data_figures: Mapping[str, str | os.PathLike] | None = None,
    readout: Mapping[str, Any] | None = None,
    clinical_figures: Mapping[str, figs.Figure] | None = None,
    title: str = "mammosynth: does synthetic data help the breast-mass classifier?",
) -> dict[str, Any]:
    """Write ``report.md`` and ``report.html`` for an evaluation.

    The first screen holds the verdict (id ``verdict``), the warnings (id ``warnings``), the one table
    (id ``results-table``) and the forest plot of the matched comparisons; every other section follows
    as a closed ``<details>`` in the HTML, with the machine-readable dumps in a final appendix.

    Args:
        out_dir: report folder (figures given from elsewhere are copied into ``assets/``).
        metrics: evaluate's ``metrics.json`` content (with the structured ``verdict``).
        context: run facts to show (split, input hashes, versions, config); any keys, nested allowed.
        figures: ``{key: png path}`` with keys from `mammosynth.figures.FIGURE_FILES` (``roc``,
            ``confusion``, ``forest``, ``seed_auc``); missing ones read "not available".
        sample_grids: ``{name: png}`` or ``{class: {"real": png, "synthetic": png}}``.
        report_card: the generator's report card (any nested dict).
        data_figures: ``{caption: png}`` of the data set (EDA: pathology counts, split balance, ...).
        readout: `mammosynth.clinical.evaluation_readout` (operating points, calibration, subgroups,
            warnings); ``None``: clinical sections say "not available" and the warnings come from
            `mammosynth.clinical.warnings` on ``metrics`` and ``report_card``.
        clinical_figures: `mammosynth.figures.render_clinical`'s ``{key: Figure}``.
        title: report title.

    Returns:
        ``{"markdown": path, "html": path, "sections": [titles], "images": [relative paths]}``.
    """
    from mammosynth import clinical

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    placed, captions = _place_all(figures, clinical_figures, metrics, out)
    phantom = None if not metrics.get("data_source") else metrics["data_source"] == "phantom"
    warns = (
        readout["warnings"]
        if readout
        else clinical.warnings(metrics, report_card=report_card, phantom=phantom)
    )
    sections = [
        _verdict_section(metrics),
        _warnings_section(warns),
        _results_table(metrics),
        *filter(None, [_external_section(metrics, placed, captions)]),
        _forest_section(placed, captions),
        _headline(metrics),
        *_results(metrics),
        *_clinical_sections(readout, placed, captions),
        _figure_section("ROC curves and per-seed AUC", ["roc", "roc_band", "seed_auc"], placed, captions),
        _confusion(metrics, placed, captions),
        _samples(sample_grids, out),
        _report_card(report_card),
        _data_figures(data_figures, out),
        _data_and_reproducibility(metrics, dict(context or {})),
        _published(),
        _methods(metrics),
        _appendix(dict(context or {}), report_card),
    ]
    md_path = write_text_atomic(out / REPORT_MD, render_markdown(title, sections))
    html_path = write_text_atomic(out / REPORT_HTML, render_html(title, sections, out))
    images = [b.path for s in sections for b in s.blocks if b.kind == "img"]
    log.info("wrote %s and %s (%d images)", md_path, html_path, len(images))
    return {
        "markdown": str(md_path),
        "html": str(html_path),
        "sections": [s.title for s in sections],
        "images": images,
    }


# ----------------------------------------------------------------------------- run folder (pipeline step)
def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    from mammosynth import __version__

    out = {"python": platform.python_version(), "mammosynth": __version__}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "pydicom", "kfp"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def _pngs(folder: Path) -> dict[str, Path]:
    """``{caption: path}`` of the PNGs in a folder, captions from file names."""
    if not folder.exists():
        return {}
    return {p.stem.replace("_", " "): p.resolve() for p in sorted(folder.glob("*.png"))}


def _rerun(cfg: Any, source: str, overrides: str | dict | None) -> str:
    ov = json.dumps(overrides) if isinstance(overrides, dict) else (overrides or "{}")
    if source == "embedded":
        return f"make run PRESET={cfg.preset}" + (
            f" OVERRIDES='{ov}'" if ov.strip() not in ("", "{}") else ""
        )
    return f"python -m pipelines run --source {source} --preset {cfg.preset} --overrides '{ov}'"


def run_context(
    cfg: Any, model_meta: Mapping[str, Any], inputs: Mapping[str, Path], syn_sets: Sequence[Path], **how: Any
) -> dict[str, Any]:
    """The run facts the report and run.json show: sizes, split, input hashes, versions, config.

    Args:
        cfg: the validated `mammosynth.config.StudyConfig`.
        model_meta: the final model's ``model.json``.
        inputs: ``{"prepared_set": dir, "split_set": dir}``.
        syn_sets: the synthetic set folders (one per generator).
        **how: ``source`` and ``overrides`` of the run (for the re-run command).

    Returns:
        The context dict (any nesting; rendered in the appendix).
    """
    from mammosynth import storage
    from mammosynth.data import shards

    many = len(syn_sets) > 1
    split_report = inputs["split_set"] / "split_report.json"
    hashes = {
        "index.csv": storage.sha256_file(inputs["split_set"] / "index.csv"),
        "prepared meta.json": storage.sha256_file(inputs["prepared_set"] / "meta.json"),
    }
    for s in syn_sets:
        hashes[f"synthetic meta.json{f' ({s.name})' if many else ''}"] = storage.sha256_file(s / "meta.json")
    return {
        "preset": cfg.preset,
        "source": how.get("source", "embedded"),
        "seed (split, phantom)": cfg.seed,
        "seeds (repeats)": list(cfg.seeds),
        "arms": list(cfg.arms),
        "final model": {
            "arm": model_meta.get("selected_arm"),
            "seed": model_meta.get("seed"),
            "selected by": model_meta.get("selected_by"),
            "path": "model/",
        },
        "data set sizes": shards.read_meta(inputs["prepared_set"])["counts"],
        "synthetic set": {s.name if many else "counts": shards.read_meta(s).get("counts") for s in syn_sets},
        "label convention": LABEL_CONVENTION,
        "split": json.loads(split_report.read_text()) if split_report.exists() else {},
        "input hashes (sha256)": hashes,
        "versions": _versions(),
        "config": cfg.to_dict(),
        "re-run": _rerun(cfg, how.get("source", "embedded"), how.get("overrides")),
    }


def _card_figures(card: Mapping[str, Any] | None, card_dir: Path, out: Path) -> dict[str, Path]:
    """Copy every figure the report card names into ``assets/`` under the same file name."""
    names = list((card or {}).get("figures") or []) or [p.name for p in sorted(card_dir.glob("*.png"))]
    placed = {}
    for name in names:
        src = card_dir / Path(name).name
        if src.is_file():
            dest = out / "assets" / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            placed[CARD_FIGURE_CAPTIONS.get(src.name, src.stem.replace("_", " "))] = dest
        else:
            log.warning("report card names figure %s but %s has no such file", name, card_dir)
    return placed


CARD_FIGURE_CAPTIONS = {
    "samples_per_class.png": "real (top) vs synthetic (bottom) per class",
    "closest_pairs.png": "memorisation audit (pixels): synthetic images closest to a GAN-training image",
    "closest_pairs_features.png": "memorisation audit (report-card features): the closest synthetic/training "
    "pairs in feature space, for a human to judge",
}


def _gan_dir(syn_sets: Sequence[Path]) -> Path | None:
    """The GAN run folder (losses.csv, samples/) of the first synthetic set, from its lineage."""
    from mammosynth.data import shards

    for s in syn_sets:
        gen = ((shards.read_meta(s).get("lineage") or {}) if (s / "meta.json").exists() else {}).get(
            "generator_dir"
        )
        if gen and (Path(gen).parent / "losses.csv").is_file():
            return Path(gen).parent
    return None


def _clinical(metrics, evaluation: Path, split_set: Path, card, out: Path, gan_dir) -> tuple[dict, dict]:
    from mammosynth import clinical

    preds = evaluation / TEST_PREDICTIONS_FILE
    index = split_set / "index.csv"
    readout = clinical.evaluation_readout(
        metrics,
        preds,
        index_csv=index if index.exists() else None,
        report_card=card,
        phantom=metrics.get("data_source") == "phantom",
    )
    arm_dirs = [
        a["dir"] for a in (metrics.get("arms") or {}).values() if a.get("dir") and Path(a["dir"]).is_dir()
    ]
    n_boot = min(int(metrics.get("n_bootstrap") or 500), 500)
    rendered = figs.render_clinical(
        out / "figures",
        preds,
        readout,
        arm_dirs=arm_dirs,
        gan_dir=gan_dir,
        n_boot=n_boot,
        seed=int(metrics.get("bootstrap_seed") or 0),
        data_source=metrics.get("data_source"),
    )
    return readout, rendered


def assemble_run(out: Path, cfg: Any, paths: Mapping[str, str], *, source: str, overrides: Any) -> Path:
    """The report step: the run folder with metrics.json, figures/, assets/, model/, report.md/html, run.json.

    Args:
        out: run folder to write.
        cfg: the validated `mammosynth.config.StudyConfig`.
        paths: ``evaluation``, ``report_card``, ``final_model``, ``prepared_set``, ``split_set``,
            ``synthetic_set`` folders from the pipeline, and optionally ``external_set``.
        source: data source name (``embedded`` = the phantom).
        overrides: the run's config overrides (for the re-run command).

    Returns:
        ``out``.
    """
    from mammosynth.provenance import data_source
    from mammosynth.synthesize import generator_sets

    p = {k: Path(v) for k, v in paths.items()}
    syn_sets = generator_sets(paths["synthetic_set"])
    out.mkdir(parents=True, exist_ok=True)
    metrics = json.loads((p["evaluation"] / METRICS_FILE).read_text())
    card_path = p["report_card"] / "report_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else None
    shutil.copytree(p["final_model"], out / "model", dirs_exist_ok=True)
    model_meta = json.loads((p["final_model"] / "model.json").read_text())
    context = run_context(cfg, model_meta, p, syn_sets, source=source, overrides=overrides)
    metrics.update(
        {
            "preset": cfg.preset,
            "seed": cfg.seed,
            "seeds": list(cfg.seeds),
            "split_sizes": context["data set sizes"],
            "final_arm": model_meta.get("selected_arm"),
            # What ingest recorded in the split set, else what the source's name says.
            "data_source": data_source(source, p["split_set"]),
        }
    )
    if metrics.get("external") and p.get("external_set") and (p["external_set"] / "meta.json").is_file():
        metrics["external"]["set"] = json.loads((p["external_set"] / "meta.json").read_text()).get("external")
    metrics["conclusion"] = conclusion(metrics)  # names the phantom test set as such
    write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2, default=str))
    if card is not None:
        write_text_atomic(out / "report_card.json", json.dumps(card, indent=2, default=str))
    readout, clinical_figs = _clinical(
        metrics, p["evaluation"], p["split_set"], card, out, _gan_dir(syn_sets)
    )
    write_report(
        out,
        metrics=metrics,
        context=context,
        figures=figs.render_all(metrics, out / "figures", p["evaluation"] / TEST_PREDICTIONS_FILE),
        sample_grids=_card_figures(card, p["report_card"], out),
        report_card=card,
        data_figures=_pngs(p["split_set"] / "eda"),
        readout=readout,
        clinical_figures=clinical_figs,
    )
    run = {"preset": cfg.preset, "source": source, "config": cfg.to_dict()}
    if (metrics.get("external") or {}).get("set"):
        run["external_source"] = metrics["external"]["set"].get("source")
    write_text_atomic(out / "run.json", json.dumps(run, indent=2))
    return out


def _load_json_arg(text: str | None, flag: str) -> Any:
    if not text:
        return None
    path = Path(text)
    try:
        return json.loads(path.read_text() if path.exists() else text)
    except json.JSONDecodeError as exc:
        raise SystemExit(
            f"{flag}: expected JSON or a path to a JSON file, got {text[:80]!r} ({exc})"
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    """The ``mammosynth report`` command line."""
    p = argparse.ArgumentParser(prog="mammosynth report", description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-dir", required=True, help="evaluate output (metrics.json, test_predictions.csv)")
    p.add_argument("--out-dir", default=None, help="report folder (default: the eval dir)")
    p.add_argument("--context", default=None, help="JSON (or path) with extra run context to show")
    p.add_argument("--sample-grids", default=None, help="JSON (or path): {name: png} or {class: {kind: png}}")
    p.add_argument("--report-card", default=None, help="JSON (or path) of the generator's report card")
    return p


def main(argv: list[str] | None = None) -> int:
    """``mammosynth report``: render report.md and report.html from an evaluate output folder.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success; prints the paths of the Markdown and HTML reports.

    Raises:
        SystemExit: the eval dir has no metrics.json, or a JSON argument does not parse.
    """
    args = build_parser().parse_args(argv)
    eval_dir = Path(args.eval_dir)
    metrics_path = eval_dir / METRICS_FILE
    if not metrics_path.exists():
        raise SystemExit(f"{metrics_path} missing: run `mammosynth evaluate --out-dir {eval_dir}` first")
    metrics = json.loads(metrics_path.read_text())
    out = Path(args.out_dir or eval_dir)
    context = {k: v for k, v in metrics.items() if k not in CONTRACT_KEYS}
    context.update(_load_json_arg(args.context, "--context") or {})
    rendered = figs.render_all(metrics, out / "figures", eval_dir / TEST_PREDICTIONS_FILE)
    result = write_report(
        out,
        metrics=metrics,
        context=context,
        figures=rendered,
        sample_grids=_load_json_arg(args.sample_grids, "--sample-grids"),
        report_card=_load_json_arg(args.report_card, "--report-card"),
    )
    print(result["markdown"])
    print(result["html"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

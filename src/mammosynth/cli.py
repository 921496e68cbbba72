"""`mammosynth <stage> ...`: one entry point, each stage's own parser in its own module.

Every stage module exposes ``main(argv) -> int``, so ``python -m mammosynth.<stage>`` (what Katib
trials and KFP containers call) and ``mammosynth <stage>`` are the same code.
"""

from __future__ import annotations

import importlib
import sys

from mammosynth.logs import setup_logging, user_error

STAGES: dict[str, tuple[str, str]] = {
    "phantom": ("mammosynth.data.phantom", "write the embedded CBIS-DDSM-like dataset"),
    "ingest": ("mammosynth.ingest", "read CBIS-DDSM (TCIA DICOM or Kaggle JPEG) into an ingested set"),
    "split": ("mammosynth.data.split", "patient-level train/val/test split of an ingested set"),
    "preprocess": ("mammosynth.preprocess", "resize/normalise an ingested set into training shards"),
    "tune": ("mammosynth.tune", "hyperparameter search (Optuna locally, Katib Experiment in-cluster)"),
    "train": ("mammosynth.train", "train one classifier (also the Katib trial entry point)"),
    "gan": ("mammosynth.gan", "train a conditional GAN with checkpoints"),
    "synthesize": ("mammosynth.synthesize", "sample a synthetic set per class from a generator"),
    "evaluate": ("mammosynth.evaluate", "statistics over arms and seeds: CIs, paired tests"),
    "report": ("mammosynth.report", "write report.md / report.html with figures"),
    "serve": ("mammosynth.serving.__main__", "serve a model with KServe (v1 and v2 protocols)"),
    "data": ("mammosynth.storage", "upload / ls / verify dataset sets in MinIO or on disk"),
    "quality": ("mammosynth.quality", "generator report card: FID/KID, precision/recall, memorisation"),
    "deploy": ("mammosynth.cluster.deploy", "export the final classifier and apply its InferenceService"),
    "readme": ("mammosynth.readme", "rewrite README.md's results block from runs/latest"),
}


def _usage() -> str:
    width = max(map(len, STAGES))
    lines = ["usage: mammosynth <stage> [options]   (mammosynth <stage> --help for each)", "", "stages:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one stage's ``main`` with the rest of the arguments.

    Args:
        argv: ``[stage, *stage_args]``; default ``sys.argv[1:]``. No stage, ``-h``/``--help``/``help``
            prints the stage list; ``--version``/``version`` prints the version.

    Returns:
        The stage's exit code; 2 for an unknown stage or a user error the stage raised (bad preset,
        overrides or paths), reported as one line on stderr.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] in {"--version", "version"}:
        from mammosynth import __version__

        print(__version__)
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"mammosynth: unknown stage {stage!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    setup_logging()
    module = importlib.import_module(STAGES[stage][0])
    try:
        return int(module.main(rest) or 0)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:  # bad preset, overrides, paths
        return user_error(f"mammosynth {stage}", exc)


if __name__ == "__main__":
    sys.exit(main())

"""A readable `make run` terminal: kfp.local's executor dumps and TensorFlow's C++ noise are dropped,
each stage gets a start and an end line with its duration, progress lines stay, and run.json gets
seconds and share per stage."""

from __future__ import annotations

import io
import itertools
import re
import sys
from pathlib import Path

from pipelines.__main__ import Terminal, shared_kfp_contexts, verbose_requested

TRANSCRIPT = """\
12:00:00.001 - INFO - Executing task \x1b[96m'ingest'\x1b[0m
12:00:00.002 - INFO - Streamed logs:

    12:00:01 INFO root: Got executor_input:
    {
        "inputs": {
            "parameterValues": {"source": "embedded"}
        }
    }
    E0000 00:00:1733059200.1 12 remapper.cc:123] remapper failed: INVALID_ARGUMENT
    2026-12-01 12:00:02 INFO mammosynth.ingest: ingest: 650 rows in, 0 rejected
    /x/y.py:3: UserWarning: something
      warnings.warn(
12:00:03.000 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
12:00:03.001 - INFO - Task 'ingest' outputs:
    ingested_set: Dataset( name='ingested_set',
                           uri='/x/ingested_set' )

12:00:03.100 - INFO - Executing task 'train-arm'
    epoch 3/10 val_auc=0.71
12:00:09.000 - INFO - Task 'train-arm' finished with status SUCCESS
12:00:09.100 - INFO - Executing task 'train-arm'
12:00:12.000 - INFO - Task 'train-arm' finished with status SUCCESS
"""


def _feed(verbose=False):
    ticks = itertools.count(0, 2)  # each clock read advances 2 s
    out = io.StringIO()
    term = Terminal(out, clock=lambda: float(next(ticks)), verbose=verbose)
    for chunk in (TRANSCRIPT[:37], TRANSCRIPT[37:400], TRANSCRIPT[400:]):  # writes split mid-line
        term.write(chunk)
    return out.getvalue(), term


def test_terminal_keeps_stage_lines_and_progress_only():
    text, _ = _feed()
    assert text.splitlines() == [
        "stage ingest: started",
        "2026-12-01 12:00:02 INFO mammosynth.ingest: ingest: 650 rows in, 0 rejected",
        "stage ingest: success in 2.0 s",
        "stage train-arm: started",
        "epoch 3/10 val_auc=0.71",
        "stage train-arm: success in 2.0 s",
        "stage train-arm: started",
        "stage train-arm: success in 2.0 s",
    ]


def test_stage_times_and_shares_for_run_json():
    _, term = _feed()
    record = term.stage_record(10.0)
    assert record["study_seconds"] == 10.0
    assert record["stages"] == {
        "ingest": {"seconds": 2.0, "share": 0.2, "runs": 1, "wall_seconds": 2.0},
        "train-arm": {"seconds": 4.0, "share": 0.6, "runs": 2, "wall_seconds": 6.0},
    }


def test_verbose_shows_everything_and_still_times(monkeypatch):
    text, term = _feed(verbose=True)
    assert "Got executor_input" in text and "remapper failed" in text
    assert term.stages["train-arm"] == 4.0
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert verbose_requested(False)
    monkeypatch.delenv("LOG_LEVEL")
    assert not verbose_requested(False) and verbose_requested(True)


FIXTURES = Path(__file__).parent / "fixtures"
_STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) - ")


def _replay(name: str) -> Terminal:
    """Feed a recorded kfp.local transcript, the clock reading each kfp line's own timestamp."""
    now = [0.0]
    term = Terminal(io.StringIO(), clock=lambda: now[0])
    for line in (FIXTURES / name).read_text().splitlines(keepends=True):
        if m := _STAMP.match(line):
            now[0] = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
        term.write(line)
    return term


def test_parallel_for_iterations_are_summed_into_their_stage():
    # Recorded: kfp.local 2.17, a 3-item ParallelFor (parallelism 3) between two stages, run with
    # shared_kfp_contexts (its three "Executing task 'work'" lines overlap).
    term = _replay("kfp_local_parallelfor.log")
    stages = term.stage_record(17.2)["stages"]
    assert list(stages) == ["plan", "work", "after"]  # the stage after the loop is there too
    work = stages["work"]
    # (40.415 + 44.842 + 49.591) - (36.141 + 36.144 + 40.422): iterations summed, not the last one
    assert (
        work["runs"] == 3 and work["seconds"] == 22.1 and work["share"] == round((49.591 - 36.141) / 17.2, 4)
    )
    assert work["wall_seconds"] == round(49.591 - 36.141, 1)
    assert "untimed_runs" not in work and "unfinished" not in work
    assert stages["after"]["seconds"] == 1.9 and stages["plan"]["seconds"] == 1.8


def test_unshared_transcript_keeps_every_iteration_and_progress_line():
    # Recorded without shared_kfp_contexts: kfp.local's print swap indented one iteration's dump
    # twice. The old filter lost that iteration's progress line inside the dump it never saw end,
    # and paired both ends with one start (work: 8.7 s, one iteration at 0.0 s).
    term = _replay("kfp_local_parallelfor_unshared.log")
    work = term.stage_record(18.0)["stages"]["work"]
    assert work["runs"] == 3 and work["seconds"] == 21.7 and "untimed_runs" not in work
    shown = term.out.getvalue()
    assert all(f"working on {i}" in shown for i in (1, 2, 3))
    assert "stage work: success in 0.0 s" not in shown


def test_an_end_without_its_start_line_is_reported_not_hidden():
    term = Terminal(io.StringIO(), clock=itertools.count(0, 1).__next__)
    term.write("12:00:01.000 - INFO - Task 'train-arm' finished with status SUCCESS\n")
    assert term.stage_record(1.0)["stages"]["train-arm"]["untimed_runs"] == 1


def test_a_stage_still_running_is_counted_up_to_the_record():
    ticks = iter([0.0, 5.0])
    term = Terminal(io.StringIO(), clock=lambda: next(ticks))
    term.write("12:00:00.000 - INFO - Executing task 'train-arm'\n")
    stage = term.stage_record(5.0)["stages"]["train-arm"]
    assert stage == {"seconds": 5.0, "share": 1.0, "runs": 1, "wall_seconds": 5.0, "unfinished": 1}


def test_stage_lines_inside_an_interleaved_dump_still_count():
    term = Terminal(io.StringIO(), clock=itertools.count(0, 1).__next__)
    term.write('    Got executor_input:\n    {\n        "inputs": {\n')
    term.write("12:00:01.000 - INFO - Executing task 'train-arm'\n        }\n    }\n")
    term.write("12:00:02.000 - INFO - Task 'train-arm' finished with status SUCCESS\n")
    assert term.stages == {"train-arm": 1.0}


def test_shared_kfp_contexts_survive_overlapping_tasks():
    """Two tasks' logger contexts overlapping (A in, B in, A out, B logs): B's line still reaches stdout."""
    import logging

    from kfp.local import logging_utils

    root = logging.getLogger()
    before = root.handlers[:]
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        with shared_kfp_contexts():
            a, b = logging_utils.local_logger_context(), logging_utils.local_logger_context()
            a.__enter__()
            b.__enter__()
            a.__exit__(None, None, None)
            logging.info("Executing task 'train-arm'")
            b.__exit__(None, None, None)
    finally:
        sys.stdout = real
    assert "Executing task 'train-arm'" in out.getvalue()
    assert root.handlers == before
    assert logging_utils.local_logger_context.__name__ == "local_logger_context"  # restored


def test_executor_prefix_and_loader_chatter_are_dropped():
    """What a component logs is shown without kfp.local's "[KFP Executor <time> INFO]: " prefix; its
    component-loading lines and Keras' retracing advice are hidden; a WARNING keeps its level."""
    out = io.StringIO()
    term = Terminal(out)
    term.write(
        "[KFP Executor 2026-12-02 02:11:33,416 INFO]: Looking for component `ingest` in --component_module_path x\n"
        '[KFP Executor 2026-12-02 02:11:33,416 INFO]: Loading KFP component "ingest" from /tmp/x.py\n'
        "[KFP Executor 2026-12-02 02:11:37,502 INFO]: phantom: 50/260 patients, 110 images\n"
        "[KFP Executor 2026-12-02 02:17:21,981 WARNING]: 5 out of the last 17 calls to <function f> triggered "
        "tf.function retracing. Tracing is expensive\n"
        "[KFP Executor 2026-12-02 02:17:22,000 WARNING]: low disk space\n"
    )
    assert out.getvalue().splitlines() == [
        "  phantom: 50/260 patients, 110 images",
        "  WARNING: low disk space",
    ]


def test_parallelfor_selector_records_are_dropped(caplog):
    """kfp.local's per-iteration "expression selector" records (root logger, INFO) echo each loop item's
    config; the filter the run installs drops them and nothing else."""
    import logging

    from pipelines.__main__ import LoopItemChatter

    root = logging.getLogger()
    chatter = LoopItemChatter()
    root.addFilter(chatter)
    try:
        with caplog.at_level(logging.INFO):
            logging.info(
                "Applying expression selector 'parseJson(string_value)[\"arm\"]' to parent value: {}"
            )
            logging.info("After expression selector: real")
            logging.info("stage train-arm: started")
    finally:
        root.removeFilter(chatter)
    assert [r.getMessage() for r in caplog.records] == ["stage train-arm: started"]

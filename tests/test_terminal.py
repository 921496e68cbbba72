"""A readable `make run` terminal: kfp.local's executor dumps and TensorFlow's C++ noise are dropped,
each stage gets a start and an end line with its duration, progress lines stay, and run.json gets
seconds and share per stage."""

from __future__ import annotations

import io
import itertools

from pipelines.__main__ import Terminal, verbose_requested

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
        "ingest": {"seconds": 2.0, "share": 0.2},
        "train-arm": {"seconds": 4.0, "share": 0.4},
    }


def test_verbose_shows_everything_and_still_times(monkeypatch):
    text, term = _feed(verbose=True)
    assert "Got executor_input" in text and "remapper failed" in text
    assert term.stages["train-arm"] == 4.0
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert verbose_requested(False)
    monkeypatch.delenv("LOG_LEVEL")
    assert not verbose_requested(False) and verbose_requested(True)

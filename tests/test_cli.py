"""`mammosynth <stage> --help` works for every stage, and the top level lists them all."""

import pytest

from mammosynth.cli import STAGES, main


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as exc:
        main([stage, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_top_level_lists_stages_and_rejects_unknown(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(stage in out for stage in STAGES)
    assert main(["trian"]) == 2
    assert "unknown stage 'trian'" in capsys.readouterr().err

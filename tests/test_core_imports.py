"""The core imports without kfp or kserve (they are needed only by components/ and serving/)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import mammosynth

_EXCLUDED = ("mammosynth.serving", "mammosynth.cluster.submit")

_BLOCKER = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kfp", "kserve"):
            raise ModuleNotFoundError(f"blocked in this test: {name}")
        return None
sys.meta_path.insert(0, _Block())
import importlib
for mod in sys.argv[1:]:
    importlib.import_module(mod)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("kfp", "kserve"))
assert not leaked, leaked
print("ok", len(sys.argv) - 1)
"""


def _core_modules() -> list[str]:
    mods = ["mammosynth"]
    for info in pkgutil.walk_packages(mammosynth.__path__, "mammosynth."):
        if not info.name.startswith(_EXCLUDED) and not info.name.endswith(".__main__"):  # __main__ runs
            mods.append(info.name)
    return mods


def test_core_imports_without_kfp_and_kserve():
    mods = _core_modules()
    assert "mammosynth.train" in mods and "mammosynth.storage.s3" in mods
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(mammosynth.__file__).parents[1])] + sys.path))
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKER, *mods], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"ok {len(mods)}"


def test_blocker_really_blocks():
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKER, "kfp"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "blocked in this test" in proc.stderr

"""``python -m mammosynth.storage`` = ``mammosynth data``."""

import sys

from mammosynth.storage.cli import main

sys.exit(main())

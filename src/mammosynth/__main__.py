"""`python -m mammosynth <stage> ...`: the same entry point as the ``mammosynth`` command."""

import sys

from mammosynth.cli import main

sys.exit(main())

import sys

from mammosynth.cli import main

sys.exit(main())

"""``python -m nasforge.cli``: the ``nasforge`` command."""

import sys

from nasforge.cli.parser import main

sys.exit(main())

"""``python -m compare``: the ``smallbig`` command, where the script is not on PATH."""

import sys

from smallbig.cli import main

sys.exit(main())

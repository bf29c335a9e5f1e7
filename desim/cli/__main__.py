"""``python -m desim.cli``: the same as the ``desim`` command."""

import sys

from desim.cli.main import main

sys.exit(main())

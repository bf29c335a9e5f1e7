"""The consoles the commands print on: results to stdout, progress and messages to stderr.

Markup is off: paths, keys and values from the user are printed verbatim, never parsed as markup.
"""

from __future__ import annotations

from rich.console import Console

out = Console(markup=False)
err = Console(stderr=True, markup=False)

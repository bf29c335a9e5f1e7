"""desim: a discrete-event simulator of device-edge cooperative fine-tuning (DEFT).

Importing ``desim`` has no side effects and never imports torch. The public entry points are
:func:`desim.io.load_scenario`, :class:`desim.engine.Simulation` and the ``desim`` command.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("desim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

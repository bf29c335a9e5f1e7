"""Fine-tuning schemes: each plans a round (DEFT, offloading, federated LoRA, DLoRA).

Importing this package registers every built-in scheme in :data:`SCHEMES`.
"""

from desim.schemes import deft as _deft  # noqa: F401  (registers)
from desim.schemes import dlora as _dlora  # noqa: F401  (registers)
from desim.schemes import fl_lora as _fl_lora  # noqa: F401  (registers)
from desim.schemes.base import SCHEMES, Scheme, SchemeParams, SelectionParams

__all__ = ["SCHEMES", "Scheme", "SchemeParams", "SelectionParams"]

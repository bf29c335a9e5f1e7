"""What a block costs.

Transformer shapes (:mod:`~desim.costs.transformer`) and counted FLOPs (:mod:`~desim.costs.flops`),
the fine-tuning methods' rules (:mod:`~desim.costs.methods`), the cost models (analytic,
profiled from fitted profiles, tables) with their registry (:mod:`~desim.costs.registry`), and
energy. Importing the package registers the cost models a scenario can name.
"""

from desim.costs import analytic as _analytic  # noqa: F401  (registers)
from desim.costs import profiled as _profiled  # noqa: F401  (registers)

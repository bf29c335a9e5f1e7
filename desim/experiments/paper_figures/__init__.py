"""Paper figures drawn from stored results: the registry :data:`~.base.FIGURES` and its families.

Importing this package registers every figure. Each family module registers its figures with
:func:`~desim.experiments.paper_figures.base.figure`, in the order ``desim figures`` draws them
and the docs gallery lists them: :mod:`.paper` (the paper's setting, p-*), :mod:`.trends`
(a)–(e), :mod:`.runs` (f)–(i), :mod:`.comparisons` (j), ``schemes``, ``dlora-kr``,
:mod:`.beyond` (the beyond-the-snapshot figures) and :mod:`.small` (``k-sweep``).
``experiments/README.md`` maps each figure to its sweep spec. (The package is not called
``figures``: ``.gitignore`` ignores every ``figures/`` folder, where figures are written.)
"""

# the registration order is the drawing order: keep these imports in this order
from desim.experiments.paper_figures import paper as _paper  # noqa: F401  (registers)

# isort: split
from desim.experiments.paper_figures import trends as _trends  # noqa: F401  (registers)

# isort: split
from desim.experiments.paper_figures import runs as _runs  # noqa: F401  (registers)

# isort: split
from desim.experiments.paper_figures import comparisons as _comparisons  # noqa: F401  (registers)

# isort: split
from desim.experiments.paper_figures import desim_baselines as _desim_baselines  # noqa: F401

# isort: split
from desim.experiments.paper_figures import regime as _regime  # noqa: F401  (registers)

# isort: split
from desim.experiments.paper_figures import beyond as _beyond  # noqa: F401  (registers)

# isort: split
from desim.experiments.paper_figures import small as _small  # noqa: F401  (registers)

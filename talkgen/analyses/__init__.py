"""Every analysis module, imported once so that its ``@register`` runs.

The import order is the default order of the talk within each section: the model card first,
then matrices (weights, activations, cells), then information flow and gradient topology.
"""

from talkgen.analyses import model_card  # noqa: F401  isort: skip
from talkgen.analyses import weights  # noqa: F401  isort: skip
from talkgen.analyses import activations  # noqa: F401  isort: skip
from talkgen.analyses import rnn_cells  # noqa: F401  isort: skip
from talkgen.analyses import saliency  # noqa: F401  isort: skip
from talkgen.analyses import attention  # noqa: F401  isort: skip
from talkgen.analyses import information_plane  # noqa: F401  isort: skip
from talkgen.analyses import landscape  # noqa: F401  isort: skip
from talkgen.analyses import curvature  # noqa: F401  isort: skip
from talkgen.analyses import gradient_flow  # noqa: F401  isort: skip
from talkgen.analyses import probes  # noqa: F401  isort: skip
from talkgen.analyses import sparse_features  # noqa: F401  isort: skip
from talkgen.analyses import metanetworks  # noqa: F401  isort: skip
from talkgen.analyses import attacks  # noqa: F401  isort: skip
from talkgen.analyses import fingerprint  # noqa: F401  isort: skip  (gathers: registered last)
from talkgen.analyses import costs  # noqa: F401  isort: skip  (gathers the cost ledger: last)

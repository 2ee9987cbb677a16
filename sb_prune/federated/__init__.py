"""sb_prune.federated: importance-targeted federated dropout on Flower.

* :class:`DropoutPolicy`: which units each client's sub-model keeps
  (none, uniform, or targeted at ambient layers by importance);
* :func:`extract_submodel` / :func:`merge_submodels`: physically smaller
  sub-models made with sb_prune's surgery, and the element-wise merge of
  their updates;
* :class:`FederatedDropout`: the Flower (message API) strategy;
* :func:`make_server_app`, :func:`make_client_app`,
  :func:`run_inprocess`: Flower ServerApp/ClientApp and an in-process
  runner (Flower's simulation engine needs Ray).

Authors
 * sb_prune developers
"""

from sb_prune.federated.dropout import DropoutPolicy, droppable_groups
from sb_prune.federated.simulation import (
    LoopbackGrid,
    make_client_app,
    make_server_app,
    run_inprocess,
)
from sb_prune.federated.strategy import (
    FederatedDropout,
    load_parameter_record,
    parameter_record,
)
from sb_prune.federated.submodel import (
    SubModel,
    extract_submodel,
    merge_submodels,
)

__all__ = [
    "DropoutPolicy",
    "FederatedDropout",
    "LoopbackGrid",
    "SubModel",
    "droppable_groups",
    "extract_submodel",
    "load_parameter_record",
    "make_client_app",
    "make_server_app",
    "merge_submodels",
    "parameter_record",
    "run_inprocess",
]

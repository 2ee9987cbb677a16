"""A Flower strategy for (importance-targeted) federated dropout.

:class:`FederatedDropout` extends Flower's message-API ``FedAvg``
(``flwr.serverapp.strategy``): in ``configure_train`` each sampled client
gets its own physically smaller sub-model (a :class:`DropoutPolicy` plan
applied with sb_prune's surgery) and, in the message's ConfigRecord, the
sub-model's structure record so that the ClientApp can build it; in
``aggregate_train`` the replies, of different shapes, are scattered back
into the full model and averaged element by element over the clients
that held each element (weighted by their number of examples); elements
no client held keep their values. Flower's own ``aggregate_arrayrecords``
cannot do this: it requires identical keys and shapes in every reply.

Authors
 * sb_prune developers
"""

import json
import logging
import random

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg

from sb_prune.federated.dropout import DropoutPolicy
from sb_prune.federated.submodel import extract_submodel, merge_submodels

logger = logging.getLogger(__name__)

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
STRUCTURE_KEY = "structure"


def parameter_record(model):
    """Return a model's parameters (no buffers) as a Flower ArrayRecord.

    Arguments
    ---------
    model : torch.nn.Module
        Any model.

    Returns
    -------
    flwr.app.ArrayRecord
        ``{parameter name: array}``.

    Example
    -------
    >>> list(parameter_record(torch.nn.Linear(2, 1)))
    ['weight', 'bias']
    """
    return ArrayRecord(
        {name: p.detach().cpu() for name, p in model.named_parameters()}
    )


def load_parameter_record(model, record):
    """Copy the parameters of an ArrayRecord into ``model``, in place.

    Arguments
    ---------
    model : torch.nn.Module
        A model with exactly the record's parameter names and shapes.
    record : flwr.app.ArrayRecord
        From :func:`parameter_record`.

    Example
    -------
    >>> source, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> load_parameter_record(target, parameter_record(source))
    >>> torch.equal(source.weight, target.weight)
    True
    """
    state = record.to_torch_state_dict()
    params = dict(model.named_parameters())
    if set(state) != set(params):
        extra = sorted(set(state) ^ set(params))
        raise ValueError(f"The received weights do not fit the model: {extra}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


class FederatedDropout(FedAvg):
    """FedAvg with per-client sub-models and element-wise merging.

    Arguments
    ---------
    model : torch.nn.Module
        The server's full model (on the CPU); its weights follow the
        global ArrayRecord.
    policy : DropoutPolicy, optional
        Which units each client keeps (default: none dropped, i.e. FedAvg
        on full models with the same merging code).
    clients_per_round : int
        Clients sampled in each round (the same clients for every policy
        with the same ``seed``).
    weighted_by_key : str
        The reply metric used as the client's weight.
    seed : int
        Seed of the client sampling.

    Example
    -------
    >>> strategy = FederatedDropout(torch.nn.Linear(2, 1), clients_per_round=2)
    >>> strategy.policy.mode
    'none'
    """

    def __init__(
        self,
        model,
        policy=None,
        clients_per_round=2,
        weighted_by_key="num-examples",
        seed=0,
    ):
        if clients_per_round < 1:
            raise ValueError(
                f"clients_per_round must be >= 1, got {clients_per_round}"
            )
        super().__init__(
            min_evaluate_nodes=0,
            min_train_nodes=clients_per_round,
            min_available_nodes=clients_per_round,
            weighted_by_key=weighted_by_key,
        )
        self.model = model
        self.policy = policy or DropoutPolicy("none")
        self.clients_per_round = clients_per_round
        self.seed = seed
        self.sent = {}
        self.history = []

    def summary(self):
        """Log the strategy's configuration."""
        logger.info(
            "FederatedDropout: %s dropout, client size %s, %d clients/round",
            self.policy.mode,
            self.policy.client_size,
            self.clients_per_round,
        )

    def sample(self, grid, server_round):
        """Return the node IDs trained in a round (seeded, sorted)."""
        nodes = sorted(grid.get_node_ids())
        if len(nodes) < self.clients_per_round:
            raise ValueError(
                f"clients_per_round is {self.clients_per_round} but only "
                f"{len(nodes)} clients are connected"
            )
        rng = random.Random(self.seed * 100003 + server_round)
        return sorted(rng.sample(nodes, self.clients_per_round))

    def configure_train(self, server_round, arrays, config, grid):
        """Send each sampled client its own sub-model."""
        load_parameter_record(self.model, arrays)
        messages, sizes = [], []
        for node in self.sample(grid, server_round):
            plan = self.policy.plan(self.model, node, server_round)
            sub = extract_submodel(self.model, plan, self.policy.compensate)
            self.sent[node] = sub
            sizes.append(sub.num_parameters)
            node_config = ConfigRecord(dict(config))
            node_config["server-round"] = server_round
            node_config[STRUCTURE_KEY] = json.dumps(sub.structure)
            content = RecordDict(
                {
                    ARRAYS_KEY: parameter_record(sub.module),
                    CONFIG_KEY: node_config,
                }
            )
            messages.append(
                Message(
                    content, dst_node_id=node, message_type=MessageType.TRAIN
                )
            )
        self.history.append(
            {
                "round": server_round,
                "clients": len(messages),
                "client_params": sizes,
            }
        )
        return messages

    def configure_evaluate(self, server_round, arrays, config, grid):
        """No federated evaluation: the server evaluates the global model."""
        return []

    def aggregate_train(self, server_round, replies):
        """Merge the clients' sub-models into the full model."""
        valid, _ = self._check_and_log_replies(
            list(replies), is_train=True, validate=False
        )
        if not valid:
            return None, None
        updates, contents = [], []
        for reply in valid:
            node = reply.metadata.src_node_id
            if node not in self.sent:
                raise ValueError(f"Unexpected reply from client node {node}")
            metrics = reply.content.metric_records
            record = next(iter(metrics.values()), {})
            if self.weighted_by_key not in record:
                raise ValueError(
                    f"The reply of client node {node} lacks the metric "
                    f"{self.weighted_by_key!r}"
                )
            params = reply.content[ARRAYS_KEY].to_torch_state_dict()
            weight = float(record[self.weighted_by_key])
            sub = self.sent.pop(node)
            updates.append((sub.positions, sub.unscaled(params), weight))
            contents.append(reply.content)
        coverage = merge_submodels(self.model, updates)
        self.history[-1]["coverage"] = float((coverage > 0).double().mean())
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return parameter_record(self.model), MetricRecord(dict(metrics))

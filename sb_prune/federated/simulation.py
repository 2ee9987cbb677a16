"""Run a Flower ServerApp and ClientApp in one process, without Ray.

Flower 1.41's simulation engine (``flwr.simulation.run_simulation``) only
has a Ray backend: ``flwr/server/superlink/fleet/vce/vce_api.py`` builds a
``RayBackend`` whatever ``backend_name`` says, and without the
``flwr[simulation]`` extra it exits with code 701. Ray is a large native
dependency for what sb_prune needs (a few clients trained one after the
other on one machine), so this module runs the same Flower objects in
process instead:

* the real ``flwr.serverapp.ServerApp`` (its ``@app.main()`` function runs
  a ``flwr.serverapp.strategy`` Strategy's ``start()`` loop) and the real
  ``flwr.clientapp.ClientApp`` (its ``@app.train()`` function);
* :class:`LoopbackGrid`, an implementation of Flower's ``Grid`` interface
  (the link between a ServerApp and the SuperLink) that hands each
  ``flwr.app.Message`` to the ClientApp of its destination node, with a
  ``flwr.app.Context`` per node (``node_config``: ``partition-id``,
  ``num-partitions``) kept across rounds. Every message, both ways, goes
  through Flower's protobuf serialisation (``flwr.common.serde``), so the
  bytes it counts are the bytes a SuperLink would carry.

Authors
 * sb_prune developers
"""

import json
import logging
import traceback
import uuid

from flwr.app import (
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from sb_prune.core.structure import restore
from sb_prune.federated.strategy import (
    load_parameter_record,
    parameter_record,
)

logger = logging.getLogger(__name__)

FIRST_NODE_ID = 1000


def _through_the_wire(message):
    """Serialise a message with Flower's protobuf serde and read it back."""
    data = message_to_proto(message).SerializeToString()
    return message_from_proto(ProtoMessage.FromString(data)), len(data)


class LoopbackGrid(Grid):
    """A Flower ``Grid`` that runs a ClientApp in process for every node.

    Arguments
    ---------
    client_app : flwr.clientapp.ClientApp
        The app every node runs.
    num_nodes : int
        Number of nodes (clients); node ``i`` gets ``partition-id`` i.
    run_config : dict, optional
        The run config every Context carries.
    run_id : int
        The run's ID.
    raise_client_errors : bool
        Re-raise a ClientApp's exception (default) instead of replying
        with a Flower error message, as the SuperNode runtime does.
    """

    def __init__(
        self,
        client_app,
        num_nodes,
        run_config=None,
        run_id=1,
        raise_client_errors=True,
    ):
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        self.client_app = client_app
        self.raise_client_errors = raise_client_errors
        self._run = Run.create_empty(run_id=run_id)
        self.contexts = {
            FIRST_NODE_ID + index: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + index,
                node_config={
                    "partition-id": index,
                    "num-partitions": num_nodes,
                },
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for index in range(num_nodes)
        }
        self.replies = {}
        self.traffic = []

    def set_run(self, run):
        """Set the run this grid operates in."""
        self._run = run

    @property
    def run(self):
        """The run this grid operates in."""
        return self._run

    def create_message(
        self, content, message_type, dst_node_id, group_id, ttl=None
    ):
        """Create a message (deprecated in Flower; kept for the interface)."""
        return Message(
            content,
            dst_node_id=dst_node_id,
            message_type=message_type,
            ttl=ttl,
            group_id=group_id,
        )

    def get_node_ids(self):
        """Return the node IDs."""
        return list(self.contexts)

    def partition_of(self, node_id):
        """Return the partition ID of a node."""
        return self.contexts[node_id].node_config["partition-id"]

    def _deliver(self, message):
        node = message.metadata.dst_node_id
        if node not in self.contexts:
            raise ValueError(f"No client node {node} in this simulation")
        received, down = _through_the_wire(message)
        try:
            reply = self.client_app(received, self.contexts[node])
        except Exception as error:
            if self.raise_client_errors:
                raise
            logger.error("client node %s failed: %s", node, error)
            reason = "".join(traceback.format_exception(error))
            error = Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
            reply = Message(error, reply_to=received)
        reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        returned, up = _through_the_wire(reply)
        return returned, down, up

    def push_messages(self, messages):
        """Run the ClientApp for every message; return the message IDs."""
        ids, down_total, up_total = [], 0, 0
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            reply, down, up = self._deliver(message)
            self.replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
            down_total += down
            up_total += up
        if ids:
            self.traffic.append(
                {"messages": len(ids), "down": down_total, "up": up_total}
            )
        return ids

    def pull_messages(self, message_ids):
        """Return (and forget) the replies to the given messages."""
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(self, messages, *, timeout=None):
        """Push the messages and return their replies."""
        return self.pull_messages(self.push_messages(messages))


def run_inprocess(
    server_app, client_app, num_nodes, run_config=None, raise_client_errors=True
):
    """Run a ServerApp against ``num_nodes`` in-process ClientApps.

    Arguments
    ---------
    server_app : flwr.serverapp.ServerApp
        The server app (e.g. from :func:`make_server_app`).
    client_app : flwr.clientapp.ClientApp
        The client app (e.g. from :func:`make_client_app`).
    num_nodes : int
        Number of client nodes.
    run_config : dict, optional
        Run config of every Context.
    raise_client_errors : bool
        See :class:`LoopbackGrid`.

    Returns
    -------
    tuple
        The server's ``Context`` (its ``state`` holds what the ServerApp
        stored) and the :class:`LoopbackGrid` (its ``traffic`` lists the
        bytes of every round).
    """
    grid = LoopbackGrid(
        client_app,
        num_nodes,
        run_config=run_config,
        raise_client_errors=raise_client_errors,
    )
    context = Context(
        run_id=grid.run.run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config or {}),
    )
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = grid.run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    try:
        server_app(grid, context)
    finally:
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = saved
    return context, grid


def _metrics_by_round(metrics):
    return {str(r): dict(record) for r, record in metrics.items()}


def make_server_app(
    strategy, initial_arrays, num_rounds, train_config=None, evaluate_fn=None
):
    """Build a ServerApp that runs ``strategy`` for ``num_rounds``.

    Its main function stores the final model under ``state["arrays"]``
    and the metrics of every round under ``state["history"]`` (a
    ConfigRecord whose ``json`` entry holds ``{"train": {round:
    metrics}, "evaluate": {round: metrics}}``) of the server Context.

    Arguments
    ---------
    strategy : flwr.serverapp.strategy.Strategy
        E.g. :class:`~sb_prune.federated.FederatedDropout`.
    initial_arrays : flwr.app.ArrayRecord
        The initial global model.
    num_rounds : int
        Number of rounds.
    train_config : dict, optional
        Sent to the clients in every round.
    evaluate_fn : callable, optional
        ``(round, arrays) -> MetricRecord or None``, run by the strategy
        before the first round and after every round.

    Returns
    -------
    flwr.serverapp.ServerApp
        The app.
    """
    if num_rounds < 1:
        raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
    app = ServerApp()

    @app.main()
    def main(grid, context):
        result = strategy.start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=num_rounds,
            train_config=ConfigRecord(dict(train_config or {})),
            evaluate_fn=evaluate_fn,
        )
        context.state["arrays"] = result.arrays
        history = {
            "train": _metrics_by_round(result.train_metrics_clientapp),
            "evaluate": _metrics_by_round(result.evaluate_metrics_serverapp),
        }
        context.state["history"] = ConfigRecord({"json": json.dumps(history)})

    return app


def make_client_app(build_model, train_fn, structure_key="structure"):
    """Build a ClientApp that trains the sub-model it receives.

    For every training message the app builds the full model with
    ``build_model()``, reshapes it to the message's structure record
    (:func:`sb_prune.core.structure.restore`: a physically smaller model),
    loads the received weights, calls ``train_fn`` and replies with the
    trained weights and ``num-examples``.

    Arguments
    ---------
    build_model : callable
        ``() -> torch.nn.Module``, the dense model (CPU).
    train_fn : callable
        ``(model, partition_id, config) -> (num_examples, metrics)``,
        trains ``model`` in place on the node's data partition; ``metrics``
        is a dict of floats.
    structure_key : str
        The ConfigRecord key of the structure record.

    Returns
    -------
    flwr.clientapp.ClientApp
        The app.
    """
    app = ClientApp()

    @app.train()
    def train(message, context):
        config = message.content["config"]
        partition = context.node_config["partition-id"]
        model = build_model()
        if structure_key in config:
            restore(model, json.loads(config[structure_key]))
        load_parameter_record(model, message.content["arrays"])
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"client {partition} received nothing to train")
        examples, metrics = train_fn(model, partition, dict(config))
        if examples < 1:
            raise ValueError(f"client {partition} has no training data")
        record = MetricRecord({"num-examples": int(examples)})
        for key, value in (metrics or {}).items():
            record[key] = float(value)
        content = RecordDict(
            {"arrays": parameter_record(model), "metrics": record}
        )
        return Message(content, reply_to=message)

    return app

"""A coordinator's API from Python: train and follow jobs, infer, manage jobs and models.

Arrays go in and come out as NumPy; requests and answers that hold no tensors are the API's own
messages (`pipemesh.v1.coordinator_pb2`), documented in protos/ and docs/api.md. Every failed call
raises a typed `pipemesh.errors.PipemeshError`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import grpc
import numpy as np
from google.protobuf import json_format

from pipemesh.errors import from_rpc_error
from pipemesh.tensors import from_tensor, to_tensor
from pipemesh.v1 import coordinator_pb2 as pb
from pipemesh.v1 import coordinator_pb2_grpc, model_pb2, optimizer_pb2, tensor_pb2
from pipemesh.v1 import parameter_server_pb2 as ps

#: A model: its spec, the spec as a dict (the JSON form of examples/*.json), or a path to such a file.
ModelLike = Union[model_pb2.ModelSpec, Mapping, str, Path]

#: Where a stage begins: a layer index, or inside a Dense, Conv2D, LSTM, GRU or Transformer layer
#: after some of its inputs, as (layer, inputs) or "LAYER:INPUTS".
SplitPoint = Union[int, tuple[int, int], str]

_SCHEDULES = {
    "gpipe": pb.SCHEDULE_GPIPE,
    "1f1b": pb.SCHEDULE_ONE_F_ONE_B,
    "zb-h1": pb.SCHEDULE_ZERO_BUBBLE_H1,
    "2bw": pb.SCHEDULE_PIPEDREAM_2BW,
}
_TRANSFER_DTYPES = {"float32": tensor_pb2.DTYPE_FLOAT32, "bfloat16": tensor_pb2.DTYPE_BFLOAT16,
                    "float16": tensor_pb2.DTYPE_FLOAT16}
_NORMALIZATIONS = {"none": pb.NORMALIZATION_METHOD_NONE, "standardize": pb.NORMALIZATION_METHOD_STANDARDIZE,
                   "min-max": pb.NORMALIZATION_METHOD_MIN_MAX}
_ENDED = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED, pb.JOB_STATE_INTERRUPTED}


@dataclass(frozen=True)
class TLS:
    """TLS to the coordinator: the CA its certificate chains to, and (for mutual TLS) this client's
    certificate and key, all PEM files. `server_name` overrides the name checked in its certificate."""

    ca: str | Path
    cert: str | Path | None = None
    key: str | Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path):
            return Path(path).read_bytes() if path else None
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS needs both cert and key for a client certificate, or neither")
        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


class Client:
    """A connection to a coordinator.

    `target` is HOST:PORT (PIPEMESH_COORDINATOR when None); `token` the bearer token the coordinator
    knows you by (PIPEMESH_TOKEN when None; none without either); `tls` for a coordinator that serves
    TLS. Calls wait up to `timeout` seconds (None: no deadline; training streams never have one).
    Use it as a context manager, or call close().
    """

    def __init__(self, target: str | None = None, *, token: str | None = None, tls: TLS | None = None,
                 timeout: float | None = 60.0):
        target = target or os.environ.get("PIPEMESH_COORDINATOR", "")
        if not target:
            raise ValueError("give the coordinator as Client('HOST:PORT') or PIPEMESH_COORDINATOR")
        token = token if token is not None else os.environ.get("PIPEMESH_TOKEN")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [("grpc.max_receive_message_length", (1 << 31) - 1), ("grpc.max_send_message_length", (1 << 31) - 1)]
        if tls:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.secure_channel(target, tls.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Calls

    def _call(self, method: str, request, timeout: float | None = -1.0):
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata,
                                               timeout=self.timeout if timeout == -1.0 else timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _stream(self, method: str, request) -> Iterator:
        call = getattr(self._stub, method)(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()  # a caller that stops early ends the stream (the job runs on)

    # Training

    def train(self, model: ModelLike, inputs=None, targets=None, *, dataset: str | Mapping | None = None,
              job: str = "", epochs: int = 10, batch_size: int = 64, micro_batches: int = 4,
              schedule: str | None = None, optimizer: str | Mapping | optimizer_pb2.OptimizerSpec | None = None,
              learning_rate: float | None = None, consistency: str = "sync", reduction: str = "ps",
              validation: float = 0.2,
              seed: int = 1, stages: int = 0, replicas: int = 0, max_replicas: int = 0,
              split_points: Sequence[SplitPoint] = (), whole_layers: bool = False, checkpoint_every: int = 0,
              checkpoint_at_end: bool = False, max_restarts: int = 0, recompute_activations: bool = False,
              normalize: str = "none", patience: int = 0, min_delta: float = 0.0, replace: bool = False,
              discard_model: bool = False, transfer_dtype: str = "float32") -> Iterator[pb.TrainProgress]:
        """Starts a training job and yields its progress (`pb.TrainProgress`) until it ends: one per
        step, one per epoch's evaluation (`evaluated`), and a last one with `done` and a step's
        pipeline trace. Raises when the job fails (`Aborted`, its error in the message) or is
        cancelled (`Cancelled`).

        The data is either `inputs` and `targets` (NumPy arrays, sent inline: one row per example;
        integer class labels, or real targets for a regression) or `dataset`: a bundled name
        ("digits"), a file on the coordinator's host inside its data directory ("data.csv",
        "x.npy,y.npy", "idx:IMAGES,LABELS"), or a dict of DatasetReference fields (uri,
        label_column, regression, inputs_key, labels_key, sequence_length: a text such as
        {"uri": "shakespeare", "sequence_length": 64} is read in windows of that many bytes).

        `schedule` is "gpipe", "1f1b", "zb-h1" or "2bw" (None: the coordinator's default, 1F1B);
        `optimizer` "sgd", "momentum", "adam" or an OptimizerSpec (as a dict or message; None: SGD),
        with `learning_rate`; `consistency` "sync", "async" or "bounded:K", and for sync replicas
        `reduction` "ps" (the ps adds up their gradients) or "ring" (each stage's replicas all-reduce
        among themselves and each applies the mean). `stages` and `replicas`
        (0: the coordinator's layout), `max_replicas` to let a sync job grow onto free partitions.
        `split_points` are where stages 1…K-1 begin: a layer index, or (layer, inputs) / "LAYER:INPUTS"
        inside a Dense, Conv2D, LSTM, GRU or Transformer layer after that many of its features, channels
        or time steps (in a Transformer block 1 is after its attention, 1+H after its attention and H of
        its MLP's hidden units); empty to let the planner balance the stages, at whole layers only with
        `whole_layers`.
        `normalize` is "none", "standardize" or "min-max": the inputs' rescaling, fitted on the
        training split and applied by infer() on the job and its model too. `patience` > 0 stops
        the job once its validation loss has not fallen (by more than `min_delta`) for that many
        epochs. `discard_model` registers no model when the job succeeds (its figures are all that
        is kept: a search's trials). `transfer_dtype` is how activations and gradients travel between
        the stages: "float32" (exact), or "bfloat16" or "float16" (half the bytes, each element
        rounded: for links slower than the stages' compute).
        The other options are TrainRequest's (docs/api.md). Stopping the iteration leaves the job
        running: cancel_job() stops it.
        """
        request = pb.TrainRequest(
            job=job, model=model_spec(model), epochs=epochs, batch_size=batch_size, micro_batches=micro_batches,
            validation_fraction=validation, shuffle_seed=seed, stages=stages, replicas=replicas,
            max_replicas=max_replicas, **_split(split_points), whole_layers=whole_layers, max_restarts=max_restarts,
            recompute_activations=recompute_activations, replace=replace, discard_model=discard_model,
            consistency=_consistency(consistency, reduction),
            checkpoint=pb.CheckpointPolicy(every_steps=checkpoint_every, at_end=checkpoint_at_end))
        if schedule is not None:
            if schedule not in _SCHEDULES:
                raise ValueError(f"schedule is {schedule!r}; give one of {', '.join(_SCHEDULES)}")
            request.schedule = _SCHEDULES[schedule]
        if optimizer is not None or learning_rate is not None:
            request.optimizer.CopyFrom(_optimizer(optimizer or "sgd", learning_rate))
        if normalize not in _NORMALIZATIONS:
            raise ValueError(f"normalize is {normalize!r}; give one of {', '.join(_NORMALIZATIONS)}")
        request.normalization.method = _NORMALIZATIONS[normalize]
        if transfer_dtype not in _TRANSFER_DTYPES:
            raise ValueError(f"transfer_dtype is {transfer_dtype!r}; give one of {', '.join(_TRANSFER_DTYPES)}")
        request.transfer_dtype = _TRANSFER_DTYPES[transfer_dtype]
        request.early_stopping.CopyFrom(pb.EarlyStopping(patience=patience, min_delta=min_delta))
        request.data.CopyFrom(_data(inputs, targets, dataset))
        return self._stream("Train", request)

    def resume_job(self, job: str) -> Iterator[pb.TrainProgress]:
        """Runs a job that was interrupted, failed or was cancelled on from its newest checkpoint;
        yields its progress as train() does."""
        return self._stream("ResumeJob", pb.ResumeJobRequest(job=job))

    def solve(self, model: ModelLike, inputs=None, targets=None, *, dataset=None, name: str = "",
              validation: float = 0.2, seed: int = 1, normalize: str = "none") -> pb.SolveResponse:
        """Linear or ridge regression in closed form (a model of one Dense layer without activation,
        mean squared error, its loss's l2 the ridge penalty), on the split train() would use: the
        kernel, bias, training objective and held-out MSE and R²; with `name`, registered as that
        model's next version."""
        if normalize not in _NORMALIZATIONS:
            raise ValueError(f"normalize is {normalize!r}; give one of {', '.join(_NORMALIZATIONS)}")
        request = pb.SolveRequest(name=name, model=model_spec(model), validation_fraction=validation,
                                  shuffle_seed=seed)
        request.normalization.method = _NORMALIZATIONS[normalize]
        request.data.CopyFrom(_data(inputs, targets, dataset))
        return self._call("Solve", request)

    def plan(self, model: ModelLike, stages: int = 0, split_points: Sequence[SplitPoint] = (), *,
             micro_batches: int = 0, schedule: str | None = None, estimate: bool = False,
             whole_layers: bool = False, batch_size: int = 0, consistency: str = "sync",
             reduction: str = "ps") -> pb.PlanResponse:
        """How the coordinator would split `model` into stages (0: over its pool's partitions): with
        times measured on a partition (unless `estimate`), each stage's and the step of
        `micro_batches` (0: 4) the `schedule` ("gpipe", "1f1b", "zb-h1", "2bw"; None: 1F1B) would take.
        With `batch_size` instead, the planner chooses the micro-batches and the schedule that train
        a step of that many examples fastest: `choices` lists every one it weighed, the chosen first.
        `split_points`, `whole_layers`, `consistency` and `reduction` as train() takes them (an LSTM or
        GRU is split at a time step only under "sync" reduced by the ps)."""
        request = pb.PlanRequest(model=model_spec(model), stages=stages, **_split(split_points),
                                 micro_batches=micro_batches, estimate=estimate, whole_layers=whole_layers,
                                 batch_size=batch_size, consistency=_consistency(consistency, reduction))
        if schedule is not None:
            if schedule not in _SCHEDULES:
                raise ValueError(f"schedule is {schedule!r}; give one of {', '.join(_SCHEDULES)}")
            request.schedule = _SCHEDULES[schedule]
        return self._call("Plan", request)

    # Inference

    def infer(self, inputs, *, job: str = "", model: str = "", micro_batches: int = 0) -> np.ndarray:
        """The outputs (logits, or regression values) of a trained job's model (`job`) or a registered
        model ("NAME" or "NAME:vN") for `inputs`, one row per example."""
        if bool(job) == bool(model):
            raise ValueError("give exactly one of job= and model=")
        answer = self._call("Infer", pb.InferRequest(job=job, model=model, inputs=to_tensor(inputs),
                                                     micro_batches=micro_batches))
        return from_tensor(answer.outputs)

    def predict(self, inputs, **where) -> tuple[np.ndarray, np.ndarray]:
        """Classes and their probabilities (softmax of the logits) for `inputs`; `where` as infer()'s."""
        logits = self.infer(inputs, **where)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
        return probabilities.argmax(axis=-1), probabilities

    # Jobs

    def get_job(self, job: str, history: bool = False) -> pb.Job:
        """A job's record; with `history`, also its steps as the coordinator saw them (`steps`:
        step, loss, accuracy, samples/s) and a recent step's pipeline timeline (`trace_json`)."""
        return self._call("GetJob", pb.GetJobRequest(job=job, history=history))

    def list_jobs(self, state: int = pb.JOB_STATE_UNSPECIFIED) -> list[pb.Job]:
        """Every job the caller may see (only those in `state`, a pb.JOB_STATE_*), in name order."""
        jobs, token = [], ""
        while True:
            page = self._call("ListJobs", pb.ListJobsRequest(state=state, page_size=1000, page_token=token))
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return jobs

    def cancel_job(self, job: str) -> pb.Job:
        return self._call("CancelJob", pb.CancelJobRequest(job=job))

    def delete_job(self, job: str) -> pb.DeleteJobResponse:
        """Deletes a job that is not running: its record, stages and variables."""
        return self._call("DeleteJob", pb.DeleteJobRequest(job=job))

    @staticmethod
    def has_ended(job: pb.Job) -> bool:
        """Whether a job's record is final (succeeded, failed, cancelled or interrupted)."""
        return job.state in _ENDED

    # Models and the pool

    def list_models(self, name: str = "") -> list[pb.Model]:
        return list(self._call("ListModels", pb.ListModelsRequest(name=name)).models)

    def get_model(self, model: str) -> pb.Model:
        return self._call("GetModel", pb.GetModelRequest(model=model))

    def delete_model(self, model: str) -> list[pb.Model]:
        """Deletes one version ("NAME:vN") or every version ("NAME"); returns what was deleted."""
        return list(self._call("DeleteModel", pb.DeleteModelRequest(model=model)).models)

    def export_model(self, model: str, path: str | Path | None = None) -> tuple[pb.Model, dict[str, np.ndarray]]:
        """A registered model's record and weights (variable name to array); with `path`, also
        writes the safetensors file there."""
        record, data = None, bytearray()
        for chunk in self._stream("ExportModel", pb.ExportModelRequest(model=model)):
            if chunk.HasField("model"):
                record = chunk.model
            data += chunk.data
        if path is not None:
            Path(path).write_bytes(data)
        from safetensors.numpy import load
        return record, load(bytes(data))

    def import_model(self, name: str, model: ModelLike, uri: str, split_points: Sequence[SplitPoint] = ()
                     ) -> pb.Model:
        """Adds a version of model `name` from a safetensors file inside the coordinator's data
        directory (`uri`, as a dataset path), split at `split_points` (as train() takes them) when
        it serves."""
        return self._call("ImportModel", pb.ImportModelRequest(name=name, spec=model_spec(model), uri=uri,
                                                               **_split(split_points)))

    UPLOAD_CHUNK_BYTES = 1 << 20

    def upload_model(self, name: str, model: ModelLike, weights: str | Path | bytes | Mapping[str, np.ndarray],
                     split_points: Sequence[SplitPoint] = (), normalization: pb.InputNormalization | None = None,
                     ) -> pb.Model:
        """Adds a version of model `name` from weights the caller has: a safetensors file's path or
        bytes, or the variables themselves ("dense_0/kernel" to a float32 array, e.g. trained in
        PyTorch or NumPy), sent to the coordinator in pieces. `normalization` is the rescaling of
        the inputs they were trained with, if any (an exported model's record carries it)."""
        if isinstance(weights, Mapping):
            from safetensors.numpy import save
            weights = save({key: np.ascontiguousarray(value, dtype=np.float32) for key, value in weights.items()})
        if isinstance(weights, (str, Path)):
            size, path = Path(weights).stat().st_size, weights
            source = lambda: open(path, "rb")  # noqa: E731 - opened only while the call reads it
        else:
            size, data = len(weights), bytes(weights)
            source = lambda: io.BytesIO(data)  # noqa: E731
        header = pb.ImportModelRequest(name=name, spec=model_spec(model), **_split(split_points))
        if normalization is not None:
            header.normalization.CopyFrom(normalization)

        def messages() -> Iterator[pb.UploadModelRequest]:
            yield pb.UploadModelRequest(model=header, size_bytes=size)
            with source() as file:
                sent = 0
                while sent < size and (piece := file.read(min(self.UPLOAD_CHUNK_BYTES, size - sent))):
                    sent += len(piece)
                    yield pb.UploadModelRequest(data=piece)

        return self._call("UploadModel", messages(), timeout=None)

    def pool(self) -> pb.Pool:
        """The coordinator's partitions (each one's address, state and job) and its ps tasks
        (each one's Stats, or whether it was silent when last asked)."""
        return self._call("GetPool", pb.GetPoolRequest())


def model_spec(model: ModelLike) -> model_pb2.ModelSpec:
    """A ModelSpec from a message, a dict in its JSON form, or a JSON file's path."""
    if isinstance(model, model_pb2.ModelSpec):
        return model
    if isinstance(model, (str, Path)):
        with open(model) as f:
            model = json.load(f)
    try:
        return json_format.ParseDict(model, model_pb2.ModelSpec())
    except json_format.ParseError as error:
        raise ValueError(f"the model is not a ModelSpec: {error}") from None


def _optimizer(optimizer, learning_rate: float | None) -> optimizer_pb2.OptimizerSpec:
    if isinstance(optimizer, optimizer_pb2.OptimizerSpec):
        spec = optimizer
    elif isinstance(optimizer, Mapping):
        spec = json_format.ParseDict(optimizer, optimizer_pb2.OptimizerSpec())
    elif optimizer == "sgd":
        spec = optimizer_pb2.OptimizerSpec(sgd=optimizer_pb2.SgdOptimizer())
    elif optimizer == "momentum":
        spec = optimizer_pb2.OptimizerSpec(momentum=optimizer_pb2.MomentumOptimizer(momentum=0.9))
    elif optimizer == "adam":
        spec = optimizer_pb2.OptimizerSpec(adam=optimizer_pb2.AdamOptimizer())
    else:
        raise ValueError(f"optimizer is {optimizer!r}; give sgd, momentum, adam or an OptimizerSpec")
    if learning_rate is not None:
        spec.learning_rate.base = learning_rate
    return spec


def _split(split_points: Sequence[SplitPoint]) -> dict[str, list[int]]:
    """`split_points` as requests carry them: the layers, and the inputs into each (none when every
    point is before a whole layer)."""
    places: list[tuple[int, int]] = []
    for point in split_points:
        if isinstance(point, str):
            layer, colon, inputs = point.partition(":")
            if not layer.isdigit() or (colon and not inputs.isdigit()):
                raise ValueError(f"split point {point!r} is neither LAYER nor LAYER:INPUTS")
            places.append((int(layer), int(inputs or 0)))
        elif isinstance(point, tuple):
            if len(point) != 2:
                raise ValueError(f"split point {point!r} is no (layer, inputs) pair")
            places.append((int(point[0]), int(point[1])))
        else:
            places.append((int(point), 0))
    inputs = [place[1] for place in places]
    return {"split_points": [place[0] for place in places], "split_point_inputs": inputs if any(inputs) else []}


def _consistency(consistency: str, reduction: str = "ps") -> ps.Consistency:
    if reduction not in ("ps", "ring"):
        raise ValueError(f"reduction is {reduction!r}; give ps or ring")
    if reduction == "ring" and consistency != "sync":
        raise ValueError(f"reduction 'ring' needs consistency 'sync', not {consistency!r}")
    if consistency == "sync":
        return ps.Consistency(sync=ps.SyncConsistency(
            reduction=ps.REDUCTION_RING if reduction == "ring" else ps.REDUCTION_UNSPECIFIED))
    if consistency == "async":
        return ps.Consistency(**{"async": ps.AsyncConsistency()})
    if consistency.startswith("bounded:") and consistency[len("bounded:"):].isdigit():
        return ps.Consistency(
            bounded=ps.BoundedConsistency(max_staleness=int(consistency[len("bounded:"):]), wait=True))
    raise ValueError(f"consistency is {consistency!r}; give sync, async or bounded:K")


def _data(inputs, targets, dataset) -> pb.DataSource:
    if dataset is not None:
        if inputs is not None or targets is not None:
            raise ValueError("give either inputs and targets, or dataset")
        reference = pb.DatasetReference(uri=dataset) if isinstance(dataset, str) else pb.DatasetReference(**dataset)
        return pb.DataSource(dataset=reference)
    if inputs is None or targets is None:
        raise ValueError("give inputs and targets (NumPy arrays), or dataset")
    if len(inputs) != len(targets):
        raise ValueError(f"inputs hold {len(inputs)} rows and targets {len(targets)}: give one target row per input")
    # Inputs travel as float32 (token ids too); integer targets as integers, converted exactly.
    return pb.DataSource(inline=pb.InlineData(inputs=to_tensor(inputs),
                                              targets=to_tensor(targets, integers=True)))

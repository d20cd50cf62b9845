"""Seeded generator of hostile requests for every RPC of the Coordinator,
Partition and ParameterServer services.

Request `index` of seed `seed` depends only on (seed, index) and the mesh it
aims at, so one request can be regenerated alone to reproduce a failure.
Three styles of request, chosen per request:

- raw bytes: random bytes, truncated or corrupted messages, hostile wire
  encodings (huge length prefixes, overlong varints, deeply nested groups);
- schema-random: every field of the request type filled from its type's
  boundary values, oneofs picked at random;
- targeted: a valid request for a loaded stage, job or variable in which each
  field turns hostile with a per-request probability (numeric boundaries,
  NaN/Inf, huge, negative and overflowing shapes, byte counts that do not
  match the shape, unknown enum values, 100 KB strings, ...).

Endpoints inside requests (ps addresses, tensor references) are only ever
127.0.0.1 addresses: the mesh's own ports or ports nothing listens on.
"""

from __future__ import annotations

import base64
import json
import math
import random
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1

INT32_EDGES = (0, -1, 1, 2, INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1, -1000, 1 << 16, 1 << 24)
INT64_EDGES = (0, -1, 1, INT32_MIN, INT32_MAX, 2**31, 2**32, -(2**31) - 1, 2**53, 2**62, INT64_MIN, INT64_MAX,
               INT64_MIN + 1, 10**12, 10**18)
UINT32_EDGES = (0, 1, 2**31, UINT32_MAX)
UINT64_EDGES = (0, 1, 2**31, 2**32, 2**63 - 1, 2**63, UINT64_MAX)
FLOAT_EDGES = (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 1e-45, 1e-38, 1e10, -1e10, 2.0)
DOUBLE_EDGES = FLOAT_EDGES + (1e308, -1e308, 5e-324)
UNKNOWN_ENUMS = (-1, 5, 99, 1000, INT32_MAX, INT32_MIN)
KiB = 1024


@dataclass(frozen=True)
class StageTarget:
    """A stage loaded on a partition, for Forward/Backward/Infer/Commit/FetchTensor to aim at."""

    partition: int  # index into MeshContext.partitions
    job: str  # the job id the partition knows the stage by
    input_width: int  # features per example of the stage's input
    output_width: int
    last: bool  # the stage computes the loss


@dataclass(frozen=True)
class PsVariable:
    """A variable held by the ps, for Pull and Push to aim at."""

    job: str
    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class MeshContext:
    """What a generator knows about the mesh it attacks."""

    coordinator: str
    ps: str
    partitions: tuple[str, ...]
    trained_job: str  # a job trained on the coordinator (Infer, GetJob)
    model_json: str  # its ModelSpec as JSON
    stages: tuple[StageTarget, ...]
    variables: tuple[PsVariable, ...]

    @property
    def protected_jobs(self) -> frozenset[str]:
        """Jobs no destructive request (LoadStage, UnloadStage, CancelJob, Train, DeleteJob,
        DeleteModel, DropJob) names: the trained job (and its model), the loaded stages'
        jobs, and every job holding the ps variables that Pull, Push and Assign aim at."""
        return frozenset({self.trained_job, *(stage.job for stage in self.stages), *(v.job for v in self.variables)})

    def is_protected_ps_job(self, job: str) -> bool:
        """Whether a ps job is, or belongs to, a protected job: the ps holds a
        coordinator's job under its run id "<job>.<8 hex>"."""
        protected = self.protected_jobs
        return job in protected or any(job.startswith(name + ".") for name in protected)

    def is_protected_model(self, reference: str) -> bool:
        """Whether a model reference ("NAME" or "NAME:vN") names a protected
        job's model: its name part (before the first ":", as the coordinator
        splits it, or before the last one) is a protected job."""
        protected = self.protected_jobs
        return reference.split(":", 1)[0] in protected or reference.rsplit(":", 1)[0] in protected


@dataclass(frozen=True)
class Rpc:
    """One RPC: its service, method and request type."""

    service: str  # "Coordinator", "Partition" or "ParameterServer"
    method: str  # "Forward"
    request: str  # request message name
    streaming: bool = False  # the server answers a stream
    client_streaming: bool = False  # the client sends a stream: the body, then the case's `rest`
    weight: int = 4  # share of the requests; less for the RPCs with (almost) nothing to vary

    @property
    def name(self) -> str:
        return f"{self.service}.{self.method}"

    @property
    def path(self) -> str:
        return f"/pipemesh.v1.{self.service}/{self.method}"


RPCS: tuple[Rpc, ...] = (
    Rpc("Coordinator", "Plan", "PlanRequest"),
    Rpc("Coordinator", "Train", "TrainRequest", streaming=True, weight=3),  # may start a real job
    Rpc("Coordinator", "Infer", "InferRequest"),
    Rpc("Coordinator", "GetJob", "GetJobRequest"),
    Rpc("Coordinator", "ListJobs", "ListJobsRequest", weight=2),
    Rpc("Coordinator", "CancelJob", "CancelJobRequest"),
    Rpc("Coordinator", "DeleteJob", "DeleteJobRequest", weight=2),  # destructive: never a protected job
    Rpc("Coordinator", "ListModels", "ListModelsRequest", weight=2),
    Rpc("Coordinator", "GetModel", "GetModelRequest", weight=3),
    Rpc("Coordinator", "DeleteModel", "DeleteModelRequest", weight=2),  # destructive: never a protected job's model
    Rpc("Coordinator", "ImportModel", "ImportModelRequest", weight=2),  # adds a version: never to a protected model
    Rpc("Coordinator", "ExportModel", "ExportModelRequest", streaming=True, weight=2),
    Rpc("Coordinator", "UploadModel", "UploadModelRequest", client_streaming=True, weight=2),  # as ImportModel
    Rpc("Partition", "LoadStage", "LoadStageRequest"),
    Rpc("Partition", "Forward", "ForwardRequest"),
    Rpc("Partition", "Backward", "BackwardRequest"),
    Rpc("Partition", "BackwardWeights", "BackwardWeightsRequest"),
    Rpc("Partition", "GradientNorm", "GradientNormRequest"),
    Rpc("Partition", "Commit", "CommitRequest"),
    Rpc("Partition", "Infer", "ForwardRequest"),
    Rpc("Partition", "FetchTensor", "FetchTensorRequest", streaming=True),
    Rpc("Partition", "UnloadStage", "UnloadStageRequest"),
    Rpc("Partition", "TimeLayers", "TimeLayersRequest"),
    Rpc("ParameterServer", "Register", "RegisterRequest"),
    Rpc("ParameterServer", "Pull", "PullRequest"),
    Rpc("ParameterServer", "Push", "PushRequest"),
    Rpc("ParameterServer", "Stats", "StatsRequest"),
    Rpc("ParameterServer", "Checkpoint", "CheckpointRequest", weight=1),
    Rpc("ParameterServer", "Assign", "AssignRequest"),
    Rpc("ParameterServer", "DropJob", "DropJobRequest", weight=2),  # destructive: never a protected job or its run ids
    Rpc("ParameterServer", "RestoreJob", "RestoreJobRequest", weight=2),  # destructive: as DropJob
    Rpc("Coordinator", "ResumeJob", "ResumeJobRequest", streaming=True, weight=2),  # never a protected job
    Rpc("Coordinator", "FollowJob", "FollowJobRequest", streaming=True),
    Rpc("Coordinator", "JoinPool", "JoinPoolRequest"),
    Rpc("Coordinator", "LeavePool", "LeavePoolRequest"),  # never one of the mesh's partitions
    Rpc("Coordinator", "GetPool", "GetPoolRequest"),
    Rpc("Coordinator", "Solve", "SolveRequest"),
)


def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """A safetensors file of float32 tensors, in name order."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        raw = tensors[name].astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def rotation(rpcs: tuple[Rpc, ...]) -> tuple[Rpc, ...]:
    """The RPCs in the order requests cycle through them, each `weight`
    times per cycle, spread evenly."""
    slots = [((k + 0.5) / rpc.weight, position, rpc) for position, rpc in enumerate(rpcs) for k in range(rpc.weight)]
    return tuple(rpc for _, _, rpc in sorted(slots, key=lambda slot: slot[:2]))


def select_rpcs(spec: str) -> tuple[Rpc, ...]:
    """The RPCs a comma-separated filter names ("Partition", "Coordinator.Train"); all when empty."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        return RPCS
    chosen = tuple(rpc for rpc in RPCS if rpc.service in names or rpc.name in names)
    if not chosen:
        raise ValueError(f"no RPC matches {spec!r}; known: {', '.join(rpc.name for rpc in RPCS)}")
    return chosen


@dataclass(frozen=True)
class Case:
    """One generated request, ready to send as raw bytes."""

    index: int
    rpc: Rpc
    endpoint: str  # host:port of the process it goes to
    body: bytes
    description: str
    train_job: str | None = None  # a Train that may start a job: its name ("" when the coordinator names it)
    size: int = -1  # bytes of the body and the rest (kept when they are dropped)
    rest: tuple[bytes, ...] = ()  # a client stream's messages after the body

    def __post_init__(self) -> None:
        if self.size < 0:
            object.__setattr__(self, "size", len(self.body) + sum(map(len, self.rest)))

    def without_body(self) -> "Case":
        """The case without its bytes, to keep in memory (it can be regenerated)."""
        return replace(self, body=b"", rest=())


# -- value pools ---------------------------------------------------------------------------


def hostile_string(rng: random.Random) -> tuple[str, str]:
    """A hostile string and a short label for it."""
    kind = rng.randrange(12)
    if kind == 9 and rng.random() < 0.5:
        kind = 1
    if kind == 0:
        return "", "''"
    if kind in (1, 2, 3):
        return "x" * (100 * KiB), "100KB"
    if kind == 4:
        return "é✓\u202e\U0001f600" * 50, "unicode"
    if kind == 5:
        return "a\x00b", "NUL"
    if kind == 6:
        return "../../../../etc/passwd", "path traversal"
    if kind == 7:
        return rng.choice(["a/b", "/", ".", "..", " ", "job name", "%s%n%x", "'; DROP TABLE jobs; --"]), "odd chars"
    if kind == 8:
        return "y" * (4 * KiB + 1), "4KB+1"
    if kind == 9:
        return "z" * (1024 * KiB), "1MB"
    if kind == 10:
        return "\n" * 1000, "newlines"
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_.-/:"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60))), "random"


def endpoint_pool(ctx: MeshContext) -> list[tuple[str, str]]:
    """(endpoint, label) pairs a request may name: 127.0.0.1 only."""
    return [
        (ctx.ps, "the ps"),
        (ctx.partitions[0], "partition A"),
        (ctx.partitions[-1], "partition B"),
        (ctx.coordinator, "the coordinator"),
        ("127.0.0.1:1", "127.0.0.1:1 (closed)"),
        ("127.0.0.1:0", "port 0"),
        ("127.0.0.1:65536", "port 65536"),
        ("127.0.0.1:-1", "port -1"),
        ("127.0.0.1:" + "9" * (100 * KiB), "100KB port"),
        ("127.0.0.1", "no port"),
    ]


def is_safe_endpoint(endpoint: str, ctx: MeshContext) -> bool:
    """Whether dialling `endpoint` stays on 127.0.0.1."""
    return endpoint in {e for e, _ in endpoint_pool(ctx)} or endpoint.startswith("127.0.0.1:")


URIS: tuple[tuple[str, str], ...] = (
    ("digits", "digits"),
    ("", "''"),
    ("does-not-exist.csv", "missing csv"),
    ("missing.npz", "missing npz"),
    ("idx:a,b", "missing idx"),
    ("idx:", "idx: empty"),
    ("../../../../etc/passwd", "traversal"),
    ("/etc/hostname", "absolute path"),
    ("/etc/passwd.csv.gz", "missing gz"),
    ("digits" + "x" * (100 * KiB), "100KB"),
    ("\x00", "NUL"),
    ("shakespeare", "text"),
    ("/etc/passwd.txt", "missing text"),
    ("../../../../etc/hostname.txt.gz", "text traversal"),
)


# -- wire encoding helpers -------------------------------------------------------------------


def varint(value: int) -> bytes:
    """Protobuf varint encoding of a non-negative integer (up to 2^64-1)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def raw_body(rng: random.Random, valid: bytes) -> tuple[bytes, str]:
    """Hostile raw bytes for a request, some derived from a valid one."""
    kind = rng.randrange(11)
    if kind <= 2:
        size = rng.choice((rng.randrange(1, 16), rng.randrange(16, 256), rng.randrange(256, 8192)))
        return rng.randbytes(size), f"raw: {size} random bytes"
    if kind == 3 and valid:
        cut = rng.randrange(len(valid))
        return valid[:cut], f"raw: valid message truncated to {cut} of {len(valid)} bytes"
    if kind == 4:
        return valid + rng.randbytes(rng.randrange(1, 64)), "raw: valid message + garbage"
    if kind == 5 and valid:
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data), "raw: valid message with corrupted bytes"
    if kind == 6:
        number = rng.randrange(1, 16)
        return tag(number, 2) + varint(rng.choice((2**31, 2**62, UINT64_MAX >> 1))) + b"abc", \
            f"raw: field {number} claims a huge length"
    if kind == 7:
        number = rng.randrange(1, 16)
        return tag(number, 0) + b"\xff" * 10 + b"\x01", f"raw: field {number} overlong varint"
    if kind == 8:
        depth = rng.choice((200, 10_000, 100_000))
        return tag(9999, 3) * depth + tag(9999, 4) * depth, f"raw: unknown groups nested {depth} deep"
    if kind == 9:
        return b"\xff" * rng.randrange(1, 512), "raw: 0xff bytes"
    wire = rng.choice((0, 1, 2, 5))
    return b"".join(tag(n, wire) + (b"\x01" if wire == 0 else b"\x01" * (8 if wire == 1 else 4) if wire in (1, 5) else b"\x01x")
                    for n in range(1, 16)), f"raw: fields 1-15 with wire type {wire}"


def unknown_fields(rng: random.Random) -> tuple[bytes, str]:
    """Unknown fields to append to a valid message."""
    number = rng.choice((16, 999, 2**29 - 1))
    return tag(number, 2) + varint(4) + b"junk" + tag(number + 1 if number < 2**29 - 1 else 1000, 0) + varint(UINT64_MAX), \
        f"unknown field {number}"


# -- one case's random choices ---------------------------------------------------------------


class Draw:
    """The random choices of one request: its rng, how often a field turns
    hostile, and notes naming each hostile choice (the request's description)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.p = rng.choice((0.05, 0.15, 0.3, 0.6))
        self.notes: list[str] = []
        self.rest: list[bytes] = []  # a client stream's messages after the first

    def hostile(self, scale: float = 1.0) -> bool:
        return self.rng.random() < self.p * scale

    def note(self, text: str) -> None:
        self.notes.append(text)

    def _edge(self, name: str, valid: Any, edges: tuple) -> Any:
        if self.hostile():
            value = self.rng.choice(edges)
            self.note(f"{name}={value}")
            return value
        return valid

    def int32(self, name: str, valid: int) -> int:
        return self._edge(name, valid, INT32_EDGES)

    def int64(self, name: str, valid: int) -> int:
        return self._edge(name, valid, INT64_EDGES)

    def uint64(self, name: str, valid: int) -> int:
        return self._edge(name, valid, UINT64_EDGES)

    def float(self, name: str, valid: float) -> float:
        return self._edge(name, valid, FLOAT_EDGES)

    def double(self, name: str, valid: float) -> float:
        return self._edge(name, valid, DOUBLE_EDGES)

    def flag(self, name: str, valid: bool) -> bool:
        if self.hostile(0.5):
            self.note(f"{name}={not valid}")
            return not valid
        return valid

    def enum(self, name: str, valid: int, count: int) -> int:
        if self.hostile():
            value = self.rng.choice(UNKNOWN_ENUMS + tuple(range(count)))
            self.note(f"{name}={value}")
            return value
        return valid

    def string(self, name: str, valid: str) -> str:
        if self.hostile():
            value, label = hostile_string(self.rng)
            self.note(f"{name}={label}")
            return value
        return valid


# -- generic, descriptor-driven messages -----------------------------------------------------


def _repeated(f: FieldDescriptor) -> bool:
    flag = getattr(f, "is_repeated", None)
    return bool(flag) if flag is not None else f.label == FieldDescriptor.LABEL_REPEATED


_INT32_TYPES = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
_INT64_TYPES = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64}
_UINT32_TYPES = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_UINT64_TYPES = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}


class SchemaFiller:
    """Fills any message from its descriptor with boundary values, choosing
    one member of each oneof; endpoint and uri fields come from safe pools."""

    def __init__(self, rng: random.Random, ctx: MeshContext, protected: frozenset[str]) -> None:
        self.rng = rng
        self.ctx = ctx
        self.protected = protected

    def fill(self, message: Message, depth: int = 0) -> None:
        rng = self.rng
        chosen = {oneof.full_name: rng.choice(oneof.fields) for oneof in message.DESCRIPTOR.oneofs}
        for f in message.DESCRIPTOR.fields:
            oneof = f.containing_oneof
            if oneof is not None and chosen[oneof.full_name] is not f:
                continue
            if rng.random() < 0.35:
                continue
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                if depth >= 4:
                    continue
                if _repeated(f):
                    for _ in range(rng.choice((1, 2, 3, 40))):
                        self.fill(getattr(message, f.name).add(), depth + 1)
                else:
                    child = getattr(message, f.name)
                    child.SetInParent()
                    self.fill(child, depth + 1)
            elif _repeated(f):
                count = rng.choice((1, 2, 3, 8, 1000))
                getattr(message, f.name).extend(self.scalar(f) for _ in range(count))
            else:
                setattr(message, f.name, self.scalar(f))

    def scalar(self, f: FieldDescriptor) -> Any:
        rng = self.rng
        if f.type in _INT32_TYPES:
            return rng.choice(INT32_EDGES)
        if f.type in _INT64_TYPES:
            return rng.choice(INT64_EDGES)
        if f.type in _UINT32_TYPES:
            return rng.choice(UINT32_EDGES)
        if f.type in _UINT64_TYPES:
            return rng.choice(UINT64_EDGES)
        if f.type == FieldDescriptor.TYPE_FLOAT:
            return rng.choice(FLOAT_EDGES)
        if f.type == FieldDescriptor.TYPE_DOUBLE:
            return rng.choice(DOUBLE_EDGES)
        if f.type == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if f.type == FieldDescriptor.TYPE_ENUM:
            return rng.choice(UNKNOWN_ENUMS + tuple(v.number for v in f.enum_type.values))
        if f.type == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.choice((0, 1, 3, 4, 64, 4096)))
        if f.name in ("endpoint", "parameter_servers"):
            return rng.choice(endpoint_pool(self.ctx))[0]
        if f.name == "uri":
            return rng.choice(URIS)[0]
        value, _ = hostile_string(rng)
        if f.name == "job" and value in self.protected:
            return "schema-random"
        return value


# -- the generator ---------------------------------------------------------------------------


class HostileGenerator:
    """Generates request `index` of a seed against a mesh (see the module docstring)."""

    def __init__(self, pb: SimpleNamespace, ctx: MeshContext, seed: int, rpcs: tuple[Rpc, ...] = RPCS) -> None:
        self.pb = pb
        self.ctx = ctx
        self.seed = seed
        self.rotation = rotation(rpcs)
        self.model_spec = json_format.Parse(ctx.model_json, pb.model.ModelSpec())
        self.modules = {"Coordinator": pb.coordinator, "Partition": pb.partition, "ParameterServer": pb.parameter_server}

    def case(self, index: int) -> Case:
        rng = random.Random(f"pipemesh-hostile:{self.seed}:{index}")
        rpc = self.rotation[index % len(self.rotation)]
        for _ in range(20):  # a raw request must not name an endpoint off 127.0.0.1
            case = self._case(index, rpc, rng)
            if self._safe(case):
                return case
        return Case(index, rpc, self._default_endpoint(rpc, rng), b"", "empty message")

    def _case(self, index: int, rpc: Rpc, rng: random.Random) -> Case:
        builder: Callable[[Draw], tuple[Message, int | None]] = getattr(self, "_" + rpc.service.lower() + "_" + rpc.method.lower())
        style = rng.random()
        d = Draw(rng)
        message, partition = builder(d)
        endpoint = self.ctx.partitions[partition] if partition is not None else self._default_endpoint(rpc, rng)
        body = message.SerializeToString()
        description = "; ".join(d.notes) or "valid"
        if style < 0.12:
            body, description = raw_body(rng, body)
        elif style < 0.30:
            message = getattr(self.modules[rpc.service], rpc.request)()
            SchemaFiller(rng, self.ctx, self.ctx.protected_jobs).fill(message)
            body = message.SerializeToString()
            description = "schema-random (boundary values in every type)"
        elif rng.random() < 0.08:
            extra, label = unknown_fields(rng)
            body += extra
            description += f"; {label}"
        train_job = None
        if rpc.method == "Train" and rpc.service == "Coordinator":
            train_job = self._train_job_name(body)
        return Case(index, rpc, endpoint, body, description[:300], train_job, rest=tuple(d.rest))

    def _default_endpoint(self, rpc: Rpc, rng: random.Random) -> str:
        if rpc.service == "Coordinator":
            return self.ctx.coordinator
        if rpc.service == "ParameterServer":
            return self.ctx.ps
        return rng.choice(self.ctx.partitions)

    def _parse(self, case: Case) -> Message | None:
        message = getattr(self.modules[case.rpc.service], case.rpc.request)()
        try:
            message.ParseFromString(case.body)
        except (DecodeError, RuntimeError, ValueError):
            return None
        return message

    def _safe(self, case: Case) -> bool:
        """Whether the request, as the server would parse it, names only
        127.0.0.1 endpoints and no job of the realism run in a destructive call."""
        if case.rpc.name in ("ParameterServer.DropJob", "ParameterServer.RestoreJob"):
            message = self._parse(case)
            return message is None or not self.ctx.is_protected_ps_job(message.job)
        if case.rpc.service == "ParameterServer" or case.rpc.method in (
                "Plan", "GetJob", "ListJobs", "FetchTensor", "Commit", "GradientNorm", "ListModels", "GetModel", "ExportModel"):
            return True
        message = self._parse(case)
        if message is None:
            return True
        # Train with or without `replace`: a protected name is refused either way.
        if case.rpc.method in ("UnloadStage", "CancelJob", "LoadStage", "Train", "DeleteJob", "ResumeJob") \
                and message.job in self.ctx.protected_jobs:
            return False
        if case.rpc.method == "DeleteModel" and self.ctx.is_protected_model(message.model):
            return False
        if case.rpc.method == "ImportModel" and self.ctx.is_protected_model(message.name):
            return False
        if case.rpc.method == "UploadModel" and self.ctx.is_protected_model(message.model.name):
            return False
        if case.rpc.method == "LeavePool" and message.endpoint in self.ctx.partitions:
            return False
        endpoints: list[str] = []
        if case.rpc.method == "LoadStage":
            endpoints += list(message.parameter_servers)
        for source_name in ("input", "output_gradient"):
            if source_name in message.DESCRIPTOR.fields_by_name and message.HasField(source_name):
                source = getattr(message, source_name)
                if source.HasField("reference"):
                    endpoints.append(source.reference.endpoint)
        return all(is_safe_endpoint(e, self.ctx) for e in endpoints)

    def _train_job_name(self, body: bytes) -> str | None:
        try:
            return self.pb.coordinator.TrainRequest.FromString(body).job
        except (DecodeError, RuntimeError, ValueError):
            return None

    # -- shared pieces ---------------------------------------------------------------------

    def _job(self, d: Draw, pool: tuple[str, ...], what: str = "job") -> str:
        """A job name from `pool`, or a hostile one (never a protected job)."""
        value = d.string(what, d.rng.choice(pool))
        return value if value not in self.ctx.protected_jobs else pool[0]

    def floats(self, d: Draw, shape: tuple[int, ...], labels: int = 0) -> bytes:
        """Little-endian float32 bytes: normal values, or class labels below `labels`."""
        generator = np.random.default_rng(d.rng.getrandbits(32))
        count = int(np.prod(shape)) if shape else 1
        if labels:
            return generator.integers(0, labels, count).astype("<f4").tobytes()
        return generator.standard_normal(count).astype("<f4").tobytes()

    def tensor(self, d: Draw, name: str, width: int, rows: int | None = None, labels: int = 0) -> Message:
        """A float32 [rows, width] tensor (rows only for labels), or a hostile one."""
        t = self.pb.tensor.Tensor
        rng = d.rng
        rows = rows if rows is not None else rng.choice((1, 2, 3, 4, 8))
        shape = (rows,) if labels else (rows, width)
        if not d.hostile(1.5):
            return t(dtype=1, shape=shape, data=self.floats(d, shape, labels))
        kind = rng.randrange(22 if labels else 20)
        good = self.floats(d, shape, labels)
        f32 = np.frombuffer(good, "<f4").copy()
        options: list[tuple[str, Callable[[], Message]]] = [
            ("NaN values", lambda: t(dtype=1, shape=shape, data=_poke(f32, rng, math.nan))),
            ("Inf values", lambda: t(dtype=1, shape=shape, data=_poke(f32, rng, rng.choice((math.inf, -math.inf))))),
            ("3e38 values", lambda: t(dtype=1, shape=shape, data=np.full(f32.shape, 3e38, "<f4").tobytes())),
            ("negative dim", lambda: t(dtype=1, shape=shape[:-1] + (-shape[-1],), data=good)),
            ("dim -1", lambda: t(dtype=1, shape=(-1,) + shape[1:], data=good)),
            ("overflowing dims", lambda: t(dtype=1, shape=rng.choice(((2**62, 2**62), (2**31, 2**31, 2**31), (INT64_MAX, 2), (2**32, 2**30))), data=good)),
            ("INT32_MAX rows", lambda: t(dtype=1, shape=(INT32_MAX,) + shape[1:], data=good)),
            ("INT64 max dim", lambda: t(dtype=1, shape=(INT64_MAX,), data=good)),
            ("zero rows", lambda: t(dtype=1, shape=(0,) + shape[1:], data=b"")),
            ("scalar", lambda: t(dtype=1, shape=(), data=good[:4])),
            ("rank 3", lambda: t(dtype=1, shape=shape + (1,), data=good)),
            ("rank 1000", lambda: t(dtype=1, shape=(1,) * 1000, data=good[:4])),
            ("data 1 byte short", lambda: t(dtype=1, shape=shape, data=good[:-1])),
            ("data 4 bytes long", lambda: t(dtype=1, shape=shape, data=good + b"\0\0\0\0")),
            ("empty data", lambda: t(dtype=1, shape=shape, data=b"")),
            ("dtype INT32", lambda: t(dtype=2, shape=shape, data=good)),
            ("dtype INT64", lambda: t(dtype=3, shape=shape, data=good + good)),
            ("dtype unspecified", lambda: t(dtype=0, shape=shape, data=good)),
            ("unknown dtype", lambda: t(dtype=rng.choice(UNKNOWN_ENUMS), shape=shape, data=good)),
            ("wrong width" if not labels else "labels [rows, 1]",
             lambda: t(dtype=1, shape=(rows, width + 1) if not labels else (rows, 1), data=self.floats(d, (rows, width + 1) if not labels else (rows, 1)))),
            ("label out of range", lambda: t(dtype=1, shape=shape, data=_poke(f32, rng, rng.choice((10.0, -1.0, 1e30, 2.5, 2.0**31, -(2.0**31)))))),
            ("label NaN", lambda: t(dtype=1, shape=shape, data=_poke(f32, rng, math.nan))),
        ]
        if rng.random() < 0.05 and not labels:
            label, make = "4096 rows", lambda: t(dtype=1, shape=(4096, width), data=self.floats(d, (4096, width)))
        else:
            label, make = options[kind]
        d.note(f"{name}: {label}")
        return make()

    def model(self, d: Draw) -> Message:
        """The realism model, maybe another small base model, with hostile layers."""
        m = self.pb.model
        spec = m.ModelSpec()
        spec.CopyFrom(self.model_spec)
        rng = d.rng
        if not d.hostile():
            return spec
        base = rng.randrange(6)
        if base == 4:
            spec = m.ModelSpec(name="cnn", input_shape=[1, 8, 8], seed=3, loss=m.LossSpec(softmax_cross_entropy={}), layers=[
                m.LayerSpec(conv2d=m.Conv2DLayer(filters=2, kernel_size=3, stride=1, padding=1, activation=1)),
                m.LayerSpec(max_pool2d=m.Pool2DLayer(size=2, stride=2)), m.LayerSpec(flatten={}),
                m.LayerSpec(dense=m.DenseLayer(units=10))])
            d.note("model: small cnn")
        elif base == 5:
            spec = m.ModelSpec(name="seq", input_shape=[8], seed=3, loss=m.LossSpec(softmax_cross_entropy={}), layers=[
                m.LayerSpec(name="embed", embedding=m.EmbeddingLayer(vocabulary_size=16, dimension=8)),
                m.LayerSpec(transformer_block=m.TransformerBlockLayer(heads=2, mlp_hidden=16)),
                m.LayerSpec(lstm=m.RecurrentLayer(units=8, return_sequences=False)),
                m.LayerSpec(dense=m.DenseLayer(units=16, tied_to="embed"))])
            d.note("model: small sequence model")
        for _ in range(rng.choice((1, 1, 2, 3))):
            self._mutate_model(d, spec)
        return spec

    def _mutate_model(self, d: Draw, spec: Message) -> None:
        m = self.pb.model
        rng = d.rng
        kind = rng.randrange(12)
        layers = spec.layers
        if kind == 0:
            shape = rng.choice(([], [0], [-1], [INT64_MAX], [2**31, 2**31], [1] * 100, [1, 28, 28], [2**40], [64, 0]))
            del spec.input_shape[:]
            spec.input_shape.extend(shape)
            d.note(f"model.input_shape={shape if len(shape) < 5 else f'rank {len(shape)}'}")
        elif kind == 1:
            del layers[:]
            d.note("model: no layers")
        elif kind == 2:
            count = rng.choice((200, 2000))
            for _ in range(count):
                layers.add(dense=m.DenseLayer(units=rng.choice((1, 10)), activation=1))
            d.note(f"model: +{count} dense layers")
        elif kind in (3, 4) and len(layers):
            layer = rng.choice(layers)
            units = rng.choice(INT64_EDGES + (1 << 20, 1 << 16))
            if layer.WhichOneof("kind") == "dense":
                layer.dense.units = units
            else:
                layers.add(dense=m.DenseLayer(units=units))
            d.note(f"model: dense units={units}")
        elif kind == 5 and len(layers):
            layers[rng.randrange(len(layers))].Clear()
            d.note("model: a layer with no kind")
        elif kind == 6:
            name = rng.choice(("dense0", "nope", "x" * (100 * KiB), ""))
            layers.add(dense=m.DenseLayer(units=4, tied_to=name))
            d.note(f"model: dense tied_to={name[:20]!r}")
        elif kind == 7:
            name, label = hostile_string(rng)
            for layer in layers:
                layer.name = name
            spec.name = name
            d.note(f"model: every layer named {label}")
        elif kind == 8:
            if rng.random() < 0.4:
                spec.loss.Clear()
            elif rng.random() < 0.5:
                spec.loss.mean_squared_error.SetInParent()
            else:
                spec.loss.l2 = rng.choice(FLOAT_EDGES)
            d.note(f"model.loss={json_format.MessageToJson(spec.loss, indent=None)[:60]}")
        elif kind == 9:
            spec.seed = rng.choice(UINT64_EDGES)
            d.note(f"model.seed={spec.seed}")
        else:
            layer = self._hostile_layer(d)
            layers.append(layer)
            d.note(f"model: + layer {json_format.MessageToJson(layer, indent=None)[:80]}")

    def _hostile_layer(self, d: Draw) -> Message:
        m = self.pb.model
        rng = d.rng
        small = lambda: rng.choice((0, -1, 1, 2, 3, INT32_MAX, INT64_MAX, INT64_MIN, 2**31, 2**40))
        act = lambda: rng.choice((0, 1, 2, 3, 4) + UNKNOWN_ENUMS)
        makers = [
            lambda: m.LayerSpec(conv2d=m.Conv2DLayer(filters=small(), kernel_size=small(), stride=small(), padding=small(), activation=act())),
            lambda: m.LayerSpec(max_pool2d=m.Pool2DLayer(size=small(), stride=small())),
            lambda: m.LayerSpec(avg_pool2d=m.Pool2DLayer(size=small(), stride=small())),
            lambda: m.LayerSpec(flatten={}),
            lambda: m.LayerSpec(activation=m.ActivationLayer(activation=act())),
            lambda: m.LayerSpec(dropout=m.DropoutLayer(rate=rng.choice(FLOAT_EDGES + (0.5, 1.0)))),
            lambda: m.LayerSpec(layer_norm=m.LayerNormLayer(epsilon=rng.choice(FLOAT_EDGES))),
            lambda: m.LayerSpec(embedding=m.EmbeddingLayer(vocabulary_size=small(), dimension=small())),
            lambda: m.LayerSpec(lstm=m.RecurrentLayer(units=small(), return_sequences=rng.random() < 0.5)),
            lambda: m.LayerSpec(gru=m.RecurrentLayer(units=small(), return_sequences=rng.random() < 0.5)),
            lambda: m.LayerSpec(transformer_block=m.TransformerBlockLayer(heads=small(), mlp_hidden=small())),
            lambda: m.LayerSpec(dense=m.DenseLayer(units=small(), activation=act(), no_bias=rng.random() < 0.5)),
        ]
        return rng.choice(makers)()

    def optimizer(self, d: Draw) -> Message:
        o = self.pb.optimizer
        spec = o.OptimizerSpec(sgd={}, learning_rate=o.LearningRateSchedule(base=0.05, constant={}))
        if not d.hostile():
            return spec
        rng = d.rng
        kind = rng.choice(("sgd", "momentum", "adam", "adamw", "adagrad", "rmsprop", None))
        f = lambda name, valid: d.float(f"optimizer.{name}", valid)
        if kind == "momentum":
            spec.momentum.CopyFrom(o.MomentumOptimizer(momentum=f("momentum", 0.9), nesterov=rng.random() < 0.5))
        elif kind in ("adam", "adamw"):
            getattr(spec, kind).CopyFrom(o.AdamOptimizer(beta1=f("beta1", 0.9), beta2=f("beta2", 0.999), epsilon=f("epsilon", 1e-8), weight_decay=f("weight_decay", 0.0)))
        elif kind == "adagrad":
            spec.adagrad.CopyFrom(o.AdagradOptimizer(initial_accumulator=f("initial_accumulator", 0.1), epsilon=f("epsilon", 1e-7)))
        elif kind == "rmsprop":
            spec.rmsprop.CopyFrom(o.RmsPropOptimizer(decay=f("decay", 0.9), epsilon=f("epsilon", 1e-7)))
        elif kind is None:
            spec.ClearField("sgd")
            d.note("optimizer: no kind")
        spec.learning_rate.base = f("learning_rate.base", 0.05)
        schedule = rng.choice(("constant", "step", "cosine", None))
        if schedule == "step":
            spec.learning_rate.step.CopyFrom(o.StepSchedule(step_size=d.int64("step.step_size", 10), gamma=f("step.gamma", 0.5)))
        elif schedule == "cosine":
            spec.learning_rate.cosine.CopyFrom(o.CosineSchedule(total_steps=d.int64("cosine.total_steps", 100), minimum=f("cosine.minimum", 0.0)))
        elif schedule is None:
            spec.learning_rate.ClearField("constant")
        spec.learning_rate.warmup_steps = d.int64("learning_rate.warmup_steps", 0)
        spec.clip_global_norm = f("clip_global_norm", 0.0)
        return spec

    def consistency(self, d: Draw) -> Message:
        ps = self.pb.parameter_server
        if not d.hostile():
            return ps.Consistency(sync={})
        rng = d.rng
        mode = rng.randrange(4)
        c = ps.Consistency()
        if mode == 0:
            c.sync.SetInParent()
        elif mode == 1:
            getattr(c, "async").SetInParent()
        elif mode == 2:
            c.bounded.CopyFrom(ps.BoundedConsistency(
                max_staleness=d.int64("bounded.max_staleness", 2), wait=rng.random() < 0.5,
                wait_timeout_seconds=d.int32("bounded.wait_timeout_seconds", 0)))
        c.replicas = d.int32("consistency.replicas", rng.choice((0, 1)))
        d.note(f"consistency mode {('sync', 'async', 'bounded', 'unset')[mode]}")
        return c

    def endpoint(self, d: Draw, name: str, valid: str) -> str:
        if d.hostile():
            value, label = d.rng.choice(endpoint_pool(self.ctx))
            d.note(f"{name}={label}")
            return value
        return valid

    def stage(self, d: Draw) -> StageTarget:
        return d.rng.choice(self.ctx.stages)

    def key(self, d: Draw, stage: StageTarget, training: bool = True) -> Message:
        p = self.pb.partition
        rng = d.rng
        job = stage.job
        if d.hostile(0.3):
            job, label = hostile_string(rng)
            d.note(f"key.job={label}")
        return p.MicroBatchKey(job=job, step=d.int64("key.step", rng.choice((1, 2, 3)) if training else rng.randrange(1, 1000)),
                               micro_batch=d.int32("key.micro_batch", rng.choice((0, 1, 2, 3))))

    def source(self, d: Draw, stage: StageTarget, name: str, width: int, gradient: bool = False) -> Message:
        """A TensorSource: inline, or a reference to a 127.0.0.1 partition's key."""
        p = self.pb.partition
        rng = d.rng
        if rng.random() < 0.8:
            return p.TensorSource(inline=self.tensor(d, name, width))
        neighbour = self.ctx.stages[(self.ctx.stages.index(stage) + (1 if gradient else -1)) % len(self.ctx.stages)]
        key = f"{neighbour.job}/{rng.choice((1, 2, 3))}/{rng.choice((0, 1))}/{'gradient' if gradient else 'activation'}"
        key = d.string(f"{name}.reference.key", key)
        endpoint = self.endpoint(d, f"{name}.reference.endpoint", self.ctx.partitions[neighbour.partition])
        d.note(f"{name} by reference")
        return p.TensorSource(reference=p.TensorReference(endpoint=endpoint, key=key))

    # -- Coordinator -----------------------------------------------------------------------

    def _coordinator_plan(self, d: Draw) -> tuple[Message, None]:
        c = self.pb.coordinator
        rng = d.rng
        request = c.PlanRequest(
            model=self.model(d), stages=d.int32("stages", rng.choice((0, 1, 2, 3))),
            micro_batch_rows=d.int32("micro_batch_rows", rng.choice((0, 8))),
            micro_batches=d.int32("micro_batches", rng.choice((0, 2))), estimate=d.flag("estimate", False),
            batch_size=d.int32("batch_size", rng.choice((0, 0, 16))), consistency=self.consistency(d))
        if d.hostile():
            points = rng.choice(([1], [2], [2, 1], [0], [-1], [INT32_MAX], [1] * 1000, list(range(1, 10_000))))
            request.split_points.extend(points)
            d.note(f"split_points={points if len(points) < 4 else f'{len(points)} points'}")
            if rng.random() < 0.5:
                inputs = rng.choice(([1] * len(points), [0] * len(points), [3], [-1] * len(points), [INT32_MAX] * len(points),
                                     [64] * len(points), [1] * (len(points) + 1)))
                request.split_point_inputs.extend(inputs)
                d.note(f"split_point_inputs={inputs if len(inputs) < 4 else f'{len(inputs)} values'}")
        request.whole_layers = d.flag("whole_layers", False)
        return request, None

    def _coordinator_train(self, d: Draw) -> tuple[Message, None]:
        c = self.pb.coordinator
        rng = d.rng
        request = c.TrainRequest(
            job=self._job(d, ("hostile-t0", "hostile-t1", "hostile-t2", "hostile-t3", "")),
            model=self.model(d), epochs=d.int32("epochs", 1), batch_size=d.int32("batch_size", rng.choice((32, 64))),
            micro_batches=d.int32("micro_batches", rng.choice((1, 2, 4))),
            schedule=d.enum("schedule", rng.choice((0, 1, 2)), 3), optimizer=self.optimizer(d), consistency=self.consistency(d),
            validation_fraction=d.float("validation_fraction", rng.choice((0.0, 0.2))),
            shuffle_seed=d.uint64("shuffle_seed", 1), recompute_activations=d.flag("recompute_activations", False),
            max_kept_bytes=d.int64("max_kept_bytes", 0), stages=d.int32("stages", 0), replicas=d.int32("replicas", 0))
        # An existing name is ALREADY_EXISTS without `replace`: half the calls replace, so
        # that the hostile-t* jobs keep training. Never a protected job (see _job and _safe).
        if rng.random() < 0.5:
            request.replace = True
            d.note("replace")
        if d.hostile():
            request.checkpoint.CopyFrom(c.CheckpointPolicy(every_steps=d.int64("checkpoint.every_steps", 0), at_end=rng.random() < 0.5))
        if d.hostile():
            request.max_restarts = d.int32("max_restarts", 1)
        if d.hostile():
            request.max_replicas = d.int32("max_replicas", rng.choice((0, 2)))
        if d.hostile():
            points = rng.choice(([1], [2], [0], [-1], [INT32_MAX], [1, 1], [2, 1]))
            request.split_points.extend(points)
            d.note(f"split_points={points}")
            if rng.random() < 0.5:
                inputs = rng.choice(([3] * len(points), [-1] * len(points), [INT32_MAX] * len(points), [1] * (len(points) + 1)))
                request.split_point_inputs.extend(inputs)
                d.note(f"split_point_inputs={inputs}")
        request.whole_layers = d.flag("whole_layers", False)
        request.normalization.method = d.enum("normalization.method", rng.choice((0, 1, 2)), 3)
        if d.hostile():
            # The coordinator fits these: any given is refused, whatever the values.
            values = rng.choice(([1.0] * 64, [float("nan")] * 64, [0.0], [float("inf")] * 100_000))
            request.normalization.offset.extend(values)
            request.normalization.scale.extend(values)
            d.note(f"normalization offset/scale of {len(values)}")
        if d.hostile():
            request.early_stopping.patience = d.int32("early_stopping.patience", 1)
            request.early_stopping.min_delta = d.float("early_stopping.min_delta", 0.0)
        if d.hostile():
            request.fold.folds = d.int32("fold.folds", 2)
            request.fold.fold = d.int32("fold.fold", 1)
        data = rng.random()  # mostly small inline data: a digits epoch costs the mesh ~1 s of CPU
        if data < 0.3:
            uri = "digits"
            if d.hostile():
                uri, label = rng.choice(URIS)
                d.note(f"data.uri={label}")
            request.data.dataset.CopyFrom(c.DatasetReference(uri=uri, label_column=d.string("label_column", ""),
                                                            regression=d.flag("regression", False),
                                                            sequence_length=d.int64("sequence_length", 0)))
        elif data < 0.95 or not d.hostile():
            rows = rng.choice((16, 64))
            request.data.inline.inputs.CopyFrom(self.tensor(d, "inline.inputs", 64, rows=rows))
            request.data.inline.targets.CopyFrom(self.tensor(d, "inline.targets", 64, rows=rows, labels=10))
        else:
            d.note("no data")
        return request, None

    def _coordinator_infer(self, d: Draw) -> tuple[Message, None]:
        c = self.pb.coordinator
        rng = d.rng
        request = c.InferRequest(inputs=self.tensor(d, "inputs", 64, rows=rng.choice((1, 5, 16))),
                                 micro_batches=d.int32("micro_batches", rng.choice((0, 1, 2))))
        target = rng.random()  # exactly one of job and model is valid
        if target < 0.55:
            request.job = d.string("job", self.ctx.trained_job)
        elif target < 0.9:
            # mostly the trained job's model ("NAME" or "NAME:v1"), which the coordinator loads on first use
            request.model = self._model_ref(d, realistic=rng.random() < 0.7)
            d.note("by model")
        elif target < 0.97:
            request.job = d.string("job", self.ctx.trained_job)
            request.model = self._model_ref(d, realistic=True)
            d.note("both job and model")
        else:
            d.note("neither job nor model")
        return request, None

    def _coordinator_getjob(self, d: Draw) -> tuple[Message, None]:
        return self.pb.coordinator.GetJobRequest(job=d.string("job", d.rng.choice((self.ctx.trained_job, "hostile-t0", "none")))), None

    def _coordinator_listjobs(self, d: Draw) -> tuple[Message, None]:
        rng = d.rng
        request = self.pb.coordinator.ListJobsRequest(
            state=d.enum("state", rng.choice((0, 0, 1, 2, 3, 4, 5)), 6),  # JobState: 0..5
            page_size=d.int32("page_size", rng.choice((0, 0, 1, 2, 10, 100, 1000))))
        token = rng.random()
        if token < 0.5:
            value = ""
        elif token < 0.8:  # a next_page_token as the coordinator makes them: the base64 of the last name
            name = rng.choice((self.ctx.trained_job, "hostile-t0", "hostile-t3", "a", "zzzz", "", "x" * 200))
            value = base64.b64encode(name.encode()).decode()
        else:
            value, label = rng.choice((
                ("!!!!", "not base64"), ("abc", "base64 without padding"), ("=", "only padding"),
                (base64.b64encode(b"\xff\xfe\x00").decode(), "base64 of bytes that are not UTF-8"),
                (base64.b64encode(b"y" * (64 * KiB)).decode(), "base64 of a 64KB name"),
                (base64.urlsafe_b64encode(b"\xfb\xff\xbf").decode(), "url-safe base64")))
            d.note(f"page_token: {label}")
        request.page_token = d.string("page_token", value)
        return request, None

    def _coordinator_canceljob(self, d: Draw) -> tuple[Message, None]:
        return self.pb.coordinator.CancelJobRequest(job=self._job(d, ("hostile-t0", "hostile-t1", "none", "hostile-l0"))), None

    def _coordinator_followjob(self, d: Draw) -> tuple[Message, None]:
        return self.pb.coordinator.FollowJobRequest(job=self._job(d, ("hostile-t0", "hostile-t1", "none", ""))), None

    def _coordinator_resumejob(self, d: Draw) -> tuple[Message, None]:
        return self.pb.coordinator.ResumeJobRequest(job=self._job(d, ("hostile-t0", "hostile-t1", "none"))), None

    def _coordinator_deletejob(self, d: Draw) -> tuple[Message, None]:
        # hostile-t* jobs come and go with the Train calls (running ones are FAILED_PRECONDITION)
        return self.pb.coordinator.DeleteJobRequest(
            job=self._job(d, ("hostile-t0", "hostile-t1", "hostile-t2", "hostile-t3", "none", "hostile-l0"))), None

    # model references: well-formed, malformed, and those of jobs the Train calls may register
    _MODEL_REFS = ("hostile-t0", "hostile-t0:v1", "hostile-t1:v2", "hostile-t2:v1", "none", "none:v1", "x:v0", "x:v", "x:v-1",
                   "x:V1", "x:v1 ", "x:v99999999999", f"x:v{INT32_MAX}", f"x:v{2**31}", "x:", ":v1", ":", "a:b:c", "x:v1:v2",
                   "x:v01", "x:1", "x::v1")

    def _model_ref(self, d: Draw, realistic: bool = False, destructive: bool = False) -> str:
        """A model reference: the trained job's model ("NAME", "NAME:v1"; not when
        `destructive`), another well-formed or malformed one, or a hostile string.
        A destructive one never names a protected job's model."""
        rng = d.rng
        trained = self.ctx.trained_job
        if destructive:
            pool = self._MODEL_REFS
        elif realistic:
            pool = (trained, f"{trained}:v1")
        else:
            pool = (trained, f"{trained}:v1", f"{trained}:v2", f"{trained}:v0", f"{trained}:v{INT32_MAX}", f"{trained}:",
                    f"{trained}:v1:v1") + self._MODEL_REFS
        value = rng.choice(pool)
        if d.hostile(0.3):
            name, label = hostile_string(rng)
            value = f"{name}:v{rng.choice((1, 2))}"
            d.note(f"model=<{label}>:vN")
        else:
            value = d.string("model", value)
        if destructive and self.ctx.is_protected_model(value):
            return pool[0]
        return value

    def _coordinator_listmodels(self, d: Draw) -> tuple[Message, None]:
        name = d.string("name", d.rng.choice(("", "", self.ctx.trained_job, "hostile-t0", "none", "x:v1", ":v1", "a:b:c")))
        return self.pb.coordinator.ListModelsRequest(name=name), None

    def _coordinator_getmodel(self, d: Draw) -> tuple[Message, None]:
        return self.pb.coordinator.GetModelRequest(model=self._model_ref(d, realistic=d.rng.random() < 0.4)), None

    def _coordinator_deletemodel(self, d: Draw) -> tuple[Message, None]:
        return self.pb.coordinator.DeleteModelRequest(model=self._model_ref(d, destructive=True)), None

    def _coordinator_importmodel(self, d: Draw) -> tuple[Message, None]:
        uri = d.string("uri", d.rng.choice(("weights.safetensors", "/etc/passwd", "../x.safetensors", "", "missing.safetensors")))
        return self._import_request(d, uri), None

    def _import_request(self, d: Draw, uri: str) -> Message:
        """What ImportModel asks, and the header of an UploadModel."""
        spec = self.pb.model.ModelSpec()
        spec.CopyFrom(self.model_spec)
        return self.pb.coordinator.ImportModelRequest(
            name=self._model_ref(d, destructive=True), spec=spec, uri=uri,
            split_points=[d.int32("split_points", 1)] if d.rng.random() < 0.3 else [])

    def _coordinator_uploadmodel(self, d: Draw) -> tuple[Message, None]:
        """A header, then the weights of the trained job's variables as a safetensors file in
        pieces; hostile: the declared size, the pieces (a 5 MiB one, bytes past or short of the
        size, a second header), NaN values, a uri."""
        c = self.pb.coordinator
        rng = d.rng
        header = self._import_request(d, d.string("uri", "") if d.hostile(0.3) else "")
        shapes = {v.name: v.shape for v in self.ctx.variables}
        values = {name: np.asarray(np.random.default_rng(rng.randrange(2**32)).normal(size=shape), dtype="<f4")
                  for name, shape in shapes.items()}
        if values and d.hostile(0.3):
            next(iter(values.values())).flat[0] = np.nan
            d.note("a NaN weight")
        file = safetensors_bytes(values) if values else bytes(rng.randrange(256) for _ in range(64))
        size = d.int64("size_bytes", len(file))
        pieces = []
        while len(file) > 0:
            cut = rng.randint(1, max(1, len(file) // rng.choice((1, 2, 8))))
            pieces.append(file[:cut])
            file = file[cut:]
        if pieces and d.hostile(0.5):
            pieces.pop()
            d.note("the last piece missing")
        if d.hostile(0.5):
            pieces.append(bytes(5 << 20))
            d.note("a 5 MiB piece")
        if d.hostile(0.5):
            pieces.append(b"past the size")
            d.note("bytes past the size")
        if d.hostile(0.3):
            pieces.insert(rng.randint(0, len(pieces)), b"")
            d.note("an empty piece")
        d.rest = [c.UploadModelRequest(data=piece).SerializeToString() for piece in pieces]
        if d.hostile(0.3):
            d.rest.insert(rng.randint(0, len(d.rest)), c.UploadModelRequest(model=header, size_bytes=9).SerializeToString())
            d.note("a second header")
        return c.UploadModelRequest(model=header, size_bytes=size), None

    def _coordinator_solve(self, d: Draw) -> tuple[Message, None]:
        c = self.pb.coordinator
        rng = d.rng
        features = rng.choice((64, 64, 5000))
        model = self.pb.model.ModelSpec(input_shape=[d.int64("input_shape", features)])
        dense = model.layers.add().dense
        dense.units = d.int64("units", 1)
        dense.activation = d.enum("activation", 0, 5)
        model.loss.mean_squared_error.SetInParent()
        model.loss.l2 = d.float("l2", rng.choice((0.0, 0.1)))
        if d.hostile():
            model.layers.add().dense.units = 1
            d.note("two layers")
        request = c.SolveRequest(model=model, validation_fraction=d.float("validation_fraction", 0.2),
                                 shuffle_seed=d.uint64("shuffle_seed", 1),
                                 name=d.string("name", rng.choice(("", "hostile-solved"))))
        request.normalization.method = d.enum("normalization.method", rng.choice((0, 1)), 3)
        rows = rng.choice((16, 64))
        request.data.inline.inputs.CopyFrom(self.tensor(d, "inline.inputs", features, rows=rows))
        request.data.inline.targets.CopyFrom(self.tensor(d, "inline.targets", 1, rows=rows))
        return request, None

    def _coordinator_exportmodel(self, d: Draw) -> tuple[Message, None]:
        return self.pb.coordinator.ExportModelRequest(model=self._model_ref(d, realistic=d.rng.random() < 0.5)), None

    def _coordinator_joinpool(self, d: Draw) -> tuple[Message, None]:
        # Valid: a partition of the mesh, already a member (a renewal changes nothing).
        return self.pb.coordinator.JoinPoolRequest(endpoint=self.endpoint(d, "endpoint", self.ctx.partitions[-1])), None

    def _coordinator_leavepool(self, d: Draw) -> tuple[Message, None]:
        # Never one of the mesh's partitions (see _safe): no job could be placed on it after.
        endpoint = d.string("endpoint", d.rng.choice(("127.0.0.1:1", "10.0.0.1:7100", "", "no-port")))
        return self.pb.coordinator.LeavePoolRequest(endpoint=endpoint), None

    def _coordinator_getpool(self, d: Draw) -> tuple[Message, None]:
        return self.pb.coordinator.GetPoolRequest(), None

    # -- Partition -------------------------------------------------------------------------

    def _partition_loadstage(self, d: Draw) -> tuple[Message, int]:
        p = self.pb.partition
        rng = d.rng
        layers = len(self.model_spec.layers)
        first = rng.randrange(layers)
        request = p.LoadStageRequest(
            job=self._job(d, ("hostile-l0", "hostile-l1", "hostile-l2", "hostile-l3")), model=self.model(d),
            stage=d.int32("stage", rng.choice((0, 1))), first_layer=d.int32("first_layer", first),
            first_layer_inputs=d.int32("first_layer_inputs", 0),
            end_layer=d.int32("end_layer", rng.randrange(first + 1, layers + 1)), end_layer_inputs=d.int32("end_layer_inputs", 0),
            recompute_activations=d.flag("recompute_activations", False), max_kept_bytes=d.int64("max_kept_bytes", 0),
            blas_threads=d.int32("blas_threads", 0), replica=d.int32("replica", 0), consistency=self.consistency(d),
            optimizer=self.optimizer(d))
        servers = [self.endpoint(d, "parameter_servers[0]", self.ctx.ps)]
        if d.hostile(0.5):
            servers = rng.choice(([], [self.ctx.ps] * 2, [self.ctx.ps] * 1000, ["127.0.0.1:1", self.ctx.ps]))
            d.note(f"parameter_servers: {len(servers)} entries")
        request.parameter_servers.extend(servers)
        return request, rng.randrange(len(self.ctx.partitions))

    def _forward(self, d: Draw, training: bool) -> tuple[Message, int]:
        p = self.pb.partition
        stage = self.stage(d)
        request = p.ForwardRequest(key=self.key(d, stage, training), input=self.source(d, stage, "input", stage.input_width),
                                   batch_size=d.int32("batch_size", 64),
                                   schedule_position=d.int32("schedule_position", 0))
        if stage.last or d.hostile(0.3):
            rows = request.input.inline.shape[0] if request.input.HasField("inline") and len(request.input.inline.shape) else 4
            rows = rows if 0 <= rows < 5000 else 4
            request.targets.CopyFrom(self.tensor(d, "targets", 1, rows=rows, labels=10))
        if d.hostile(0.2):
            request.ClearField("input")
            d.note("no input")
        return request, stage.partition

    def _partition_timelayers(self, d: Draw) -> tuple[Message, int]:
        rng = d.rng
        request = self.pb.partition.TimeLayersRequest(
            model=self.model(d), rows=d.int32("rows", rng.choice((1, 8, 32))), repeats=d.int32("repeats", rng.choice((0, 1))))
        return request, rng.randrange(len(self.ctx.partitions))

    def _partition_forward(self, d: Draw) -> tuple[Message, int]:
        return self._forward(d, training=True)

    def _partition_infer(self, d: Draw) -> tuple[Message, int]:
        return self._forward(d, training=False)

    def _partition_backward(self, d: Draw) -> tuple[Message, int]:
        p = self.pb.partition
        stage = self.stage(d)
        request = p.BackwardRequest(key=self.key(d, stage), schedule_position=d.int32("schedule_position", 0),
                                    weights_later=d.flag("weights_later", False))
        if not stage.last or d.hostile(0.5):
            request.output_gradient.CopyFrom(self.source(d, stage, "output_gradient", stage.output_width, gradient=True))
        return request, stage.partition

    def _partition_backwardweights(self, d: Draw) -> tuple[Message, int]:
        stage = self.stage(d)
        return self.pb.partition.BackwardWeightsRequest(
            key=self.key(d, stage), schedule_position=d.int32("schedule_position", 0)), stage.partition

    def _partition_commit(self, d: Draw) -> tuple[Message, int]:
        stage = self.stage(d)
        job = stage.job if not d.hostile(0.3) else self._job(d, ("hostile-l0", "none"))
        return self.pb.partition.CommitRequest(job=job, step=d.int64("step", d.rng.choice((1, 2, 3))),
                                               flush=d.flag("flush", False),
                                               gradient_scale=d.float("gradient_scale", d.rng.choice((0.0, 0.5, 1.0)))
                                               ), stage.partition

    def _partition_gradientnorm(self, d: Draw) -> tuple[Message, int]:
        stage = self.stage(d)
        job = stage.job if not d.hostile(0.3) else self._job(d, ("hostile-l0", "none"))
        return self.pb.partition.GradientNormRequest(job=job, step=d.int64("step", d.rng.choice((1, 2, 3)))), \
            stage.partition

    def _partition_fetchtensor(self, d: Draw) -> tuple[Message, int]:
        rng = d.rng
        stage = self.stage(d)
        key = f"{stage.job}/{rng.choice((1, 2, 3))}/{rng.choice((0, 1))}/{rng.choice(('activation', 'gradient'))}"
        if d.hostile():
            key = rng.choice((f"{stage.job}/{INT64_MAX}/{INT32_MIN}/activation", f"{stage.job}/-1/-1/gradient",
                              f"{stage.job}/x/y/z", f"{stage.job}", "/", "//", f"{stage.job}/1/0/activation/extra",
                              f"{stage.job}/99999999999999999999999/0/activation", hostile_string(rng)[0]))
            d.note(f"key={key[:40]!r}")
        return self.pb.partition.FetchTensorRequest(key=key, release=d.flag("release", False),
                                                    wait=d.flag("wait", False)), stage.partition

    def _partition_unloadstage(self, d: Draw) -> tuple[Message, int]:
        job = self._job(d, ("hostile-l0", "hostile-l1", "hostile-l2", "hostile-l3", "none"))
        return self.pb.partition.UnloadStageRequest(job=job), d.rng.randrange(len(self.ctx.partitions))

    # -- ParameterServer -------------------------------------------------------------------

    def _variable(self, d: Draw, name: str) -> Message:
        ps = self.pb.parameter_server
        rng = d.rng
        shape: tuple[int, ...] = (4, 4)
        if d.hostile():
            # from absurd to merely large: 256 MiB, 1 GiB, 4 GiB, 16 GiB of float32
            shape = rng.choice(((), (0,), (-1,), (4, -4), (2**31, 2**31), (2**62, 4), (INT64_MAX,), (1,) * 1000,
                                (INT32_MAX,), (1 << 13, 1 << 13), (1 << 14, 1 << 14), (1 << 15, 1 << 15),
                                (1 << 16, 1 << 16), (1 << 20,), (3,)))
            name = f"{name}-{rng.getrandbits(32):08x}"  # a new variable: no clash with an earlier definition
            d.note(f"shape={shape if len(shape) < 5 else f'rank {len(shape)}'}")
        definition = ps.VariableDefinition(name=d.string("variable.name", name), shape=shape,
                                           dtype=d.enum("dtype", 1, 4))
        init = rng.randrange(8) if d.hostile() else 0
        if init in (0, 6):
            definition.initializer.CopyFrom(self.initializer(d))
        if init in (1, 6):
            count = int(np.prod(shape)) if shape and all(0 <= s < 4096 for s in shape) else 16
            definition.initial_value.CopyFrom(self.pb.tensor.Tensor(dtype=1, shape=shape, data=self.floats(d, (count,))))
        if init == 2:
            definition.initial_value.CopyFrom(self.tensor(d, "initial_value", 4, rows=4))
        if init:
            d.note(f"initializer kind {('initializer', 'initial_value', 'hostile initial_value', 'none', 'none', 'none', 'both', 'none')[init]}")
        definition.optimizer.CopyFrom(self.optimizer(d))
        return definition

    def initializer(self, d: Draw) -> Message:
        ps = self.pb.parameter_server
        rng = d.rng
        kind = rng.randrange(5)
        f = lambda name, valid: d.float(f"initializer.{name}", valid)
        i64 = lambda name, valid: d.int64(f"initializer.{name}", valid)
        init = ps.Initializer(seed=d.uint64("initializer.seed", 5))
        if kind == 0:
            init.constant = f("constant", 0.0)
        elif kind == 1:
            init.normal.CopyFrom(ps.RandomNormal(mean=f("mean", 0.0), stddev=f("stddev", 0.1)))
        elif kind == 2:
            init.uniform.CopyFrom(ps.RandomUniform(minimum=f("minimum", -0.1), maximum=f("maximum", 0.1)))
        elif kind == 3:
            init.glorot_uniform.CopyFrom(ps.GlorotUniform(fan_in=i64("fan_in", 4), fan_out=i64("fan_out", 4)))
        else:
            init.he_normal.CopyFrom(ps.HeNormal(fan_in=i64("fan_in", 4)))
        return init

    def _parameterserver_register(self, d: Draw) -> tuple[Message, None]:
        ps = self.pb.parameter_server
        rng = d.rng
        job = d.string("job", rng.choice(("hostile-r0", "hostile-r1", "hostile-r2")))
        request = ps.RegisterRequest(job=job, consistency=self.consistency(d), user=d.string("user", rng.choice(("stage0", "stage1"))),
                                     writer_keeps_values=d.flag("writer_keeps_values", False))
        count = rng.choice((1, 1, 2, 3))
        if d.hostile(0.1):
            count = rng.choice((0, 2000))
            d.note(f"{count} variables")
        for i in range(count):
            request.variables.append(self._variable(d, f"v{i % 3}") if count < 100 else ps.VariableDefinition(
                name=f"many{i}", shape=[2], dtype=1, initializer=ps.Initializer(constant=1.0)))
        return request, None

    def _ps_variable(self, d: Draw) -> PsVariable:
        return d.rng.choice(self.ctx.variables)

    def _parameterserver_pull(self, d: Draw) -> tuple[Message, None]:
        ps = self.pb.parameter_server
        rng = d.rng
        variable = self._ps_variable(d)
        request = ps.PullRequest(job=d.string("job", variable.job), include_slots=d.flag("include_slots", False))
        names = [v.name for v in self.ctx.variables if v.job == variable.job]
        for name in rng.sample(names, rng.randrange(len(names) + 1)):
            request.variables.append(ps.VariableVersion(name=d.string("variables.name", name), version=d.int64("variables.version", 0)))
        if d.hostile(0.1):
            request.variables.extend(ps.VariableVersion(name=f"missing{i}", version=i) for i in range(10_000))
            d.note("10000 unknown variables")
        return request, None

    def _variable_tensors(self, d: Draw, job: str, what: str) -> list[tuple[PsVariable, Message]]:
        """One or two of the job's variables, each with a tensor of its shape (or, hostile, of another)."""
        picked = []
        for v in d.rng.sample([v for v in self.ctx.variables if v.job == job], d.rng.randrange(1, 3)):
            tensor = self.pb.tensor.Tensor(dtype=1, shape=v.shape, data=self.floats(d, v.shape))
            if d.hostile():
                width = v.shape[-1] if v.shape else 1
                tensor = self.tensor(d, f"{what}[{v.name}]", width, rows=v.shape[0] if len(v.shape) == 2 else 1)
            picked.append((v, tensor))
        return picked

    def _parameterserver_push(self, d: Draw) -> tuple[Message, None]:
        ps = self.pb.parameter_server
        rng = d.rng
        variable = self._ps_variable(d)
        request = ps.PushRequest(job=d.string("job", variable.job), client_id=d.string("client_id", "hostile"),
                                 step=d.int64("step", rng.choice((1, 2, 3, 100))), user=d.string("user", rng.choice(("stage0", "stage1"))),
                                 replica=d.int32("replica", 0))
        for v, gradient in self._variable_tensors(d, variable.job, "gradient"):
            request.gradients.append(ps.Gradient(name=d.string("gradient.name", v.name),
                                                 base_version=d.int64("base_version", rng.choice((0, 1, 5))), gradient=gradient))
        return request, None

    def _parameterserver_stats(self, d: Draw) -> tuple[Message, None]:
        return self.pb.parameter_server.StatsRequest(job=d.string("job", d.rng.choice(("", self._ps_variable(d).job)))), None

    def _parameterserver_checkpoint(self, d: Draw) -> tuple[Message, None]:
        request = self.pb.parameter_server.CheckpointRequest()
        if d.rng.random() < 0.5:  # one job's own checkpoint, at a step
            request.job = d.string("job", d.rng.choice(("hostile-r0", "hostile-r1", "none", "..", "a/b")))
            request.step = d.int64("step", d.rng.choice((1, 5, 100)))
            request.incarnation = d.uint64("incarnation", 0)
        return request, None

    def _parameterserver_restorejob(self, d: Draw) -> tuple[Message, None]:
        """Restores a job the hostile calls made, from its own checkpoints or another's; never a protected job."""
        rng = d.rng
        pool = ("hostile-r0", "hostile-r1", "hostile-r2", "none", "..", "a/../b", "")
        job = d.string("job", rng.choice(pool))
        if self.ctx.is_protected_ps_job(job):
            job = pool[0]
        return self.pb.parameter_server.RestoreJobRequest(
            job=job, step=d.int64("step", rng.choice((1, 5, 100))),
            from_job=d.string("from_job", rng.choice(("", "hostile-r1", "../etc", "none"))),
            replicas=d.int32("replicas", rng.choice((0, 1, 2)))), None

    def _parameterserver_assign(self, d: Draw) -> tuple[Message, None]:
        ps = self.pb.parameter_server
        rng = d.rng
        variable = self._ps_variable(d)
        request = ps.AssignRequest(job=d.string("job", variable.job), user=d.string("user", rng.choice(("stage0", "stage1"))))
        for v, value in self._variable_tensors(d, variable.job, "value"):
            state = ps.VariableState(name=d.string("variables.name", v.name), version=d.int64("version", rng.choice((0, 1, 5))),
                                     value=value)
            if d.hostile(0.2):
                state.slots.append(self.pb.tensor.NamedTensor(name=d.string("slots.name", "m"), tensor=value))
            request.variables.append(state)
        return request, None

    def _parameterserver_dropjob(self, d: Draw) -> tuple[Message, None]:
        """Drops a job the hostile calls made (Register, LoadStage, a Train's run
        id) or none; never a protected job nor one of its run ids "<job>.<8 hex>"."""
        rng = d.rng
        pool = ("hostile-r0", "hostile-r1", "hostile-r2", "hostile-l0", "hostile-l1", "hostile-l2", "hostile-l3", "none",
                f"hostile-t{rng.randrange(4)}.{rng.getrandbits(32):08x}", "hostile-t0.", "")
        job = d.string("job", rng.choice(pool))
        if self.ctx.is_protected_ps_job(job):
            job = pool[0]
        return self.pb.parameter_server.DropJobRequest(job=job), None


def _poke(values: np.ndarray, rng: random.Random, value: float) -> bytes:
    """`values` with a random subset of elements (at least one) set to `value`."""
    out = values.astype("<f4").copy()
    if out.size:
        for _ in range(rng.randrange(1, max(2, out.size // 2))):
            out[rng.randrange(out.size)] = value
    return out.tobytes()

"""Typed errors: every failed call raises a PipemeshError subclass named after its gRPC status.

The message is the service's own, which names the field at fault and what to give instead
("batch_size 1 must be at least the number of micro-batches (2)").
"""

from __future__ import annotations

import grpc


class PipemeshError(Exception):
    """A call the mesh refused or could not answer; `code` is its gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(PipemeshError):
    """The request is malformed; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(PipemeshError):
    """No such job, model or file."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(PipemeshError):
    """A job of that name exists (train with replace=True to replace one that ended)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(PipemeshError):
    """The caller may not do this (another user's job or model, a file outside the data directory)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(PipemeshError):
    """No token or certificate the coordinator knows."""

    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(PipemeshError):
    """Not in this state (a job that did not stop cannot resume, one that failed cannot serve)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(PipemeshError):
    """Over a memory or size bound of the mesh."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(PipemeshError):
    """A service does not answer (yet); retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(PipemeshError):
    """The call ran past its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Aborted(PipemeshError):
    """The job failed while the call followed it; the message says why."""

    code = grpc.StatusCode.ABORTED


class Cancelled(PipemeshError):
    """The job or the call was cancelled."""

    code = grpc.StatusCode.CANCELLED


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, AlreadyExists, PermissionDenied, Unauthenticated,
                                      FailedPrecondition, ResourceExhausted, Unavailable, DeadlineExceeded, Aborted,
                                      Cancelled)}


def from_rpc_error(error: grpc.RpcError) -> PipemeshError:
    """The typed error of a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return _BY_CODE.get(code, PipemeshError)(details or code.name, code)

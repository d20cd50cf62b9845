"""Pipemesh from Python: a client of a mesh's coordinator, NumPy in and out.

    from pipemesh import Client
    with Client("127.0.0.1:7000") as mesh:
        for progress in mesh.train("examples/mlp-digits.json", dataset="digits", job="digits", epochs=5):
            print(progress.step, progress.loss)
        classes, probabilities = mesh.predict(rows, job="digits")

See clients/python/README.md.
"""

from pipemesh.client import TLS, Client, model_spec
from pipemesh.errors import (Aborted, AlreadyExists, Cancelled, DeadlineExceeded, FailedPrecondition,
                             InvalidArgument, NotFound, PermissionDenied, PipemeshError, ResourceExhausted,
                             Unauthenticated, Unavailable)
from pipemesh.tensors import from_tensor, to_tensor
from pipemesh.v1 import coordinator_pb2 as api

__all__ = ["Client", "TLS", "model_spec", "to_tensor", "from_tensor", "api", "PipemeshError", "InvalidArgument",
           "NotFound", "AlreadyExists", "PermissionDenied", "Unauthenticated", "FailedPrecondition",
           "ResourceExhausted", "Unavailable", "DeadlineExceeded", "Aborted", "Cancelled"]

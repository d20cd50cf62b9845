"""The Python client against a real local mesh: train from NumPy arrays and follow the job,
infer, jobs and models, typed errors, tokens and mutual TLS, and the package as pip installs it."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2

import pipemesh
from conftest import REPOSITORY, Mesh, binary
from pipemesh import api
from pipemesh.v1 import parameter_server_pb2 as ps_pb2
from pipemesh.v1 import tensor_pb2

MODEL = {
    "inputShape": ["8"], "seed": "3",
    "layers": [{"dense": {"units": "32", "activation": "ACTIVATION_RELU"}}, {"dense": {"units": "4"}}],
    "loss": {"softmaxCrossEntropy": {}},
}


def blobs(rows: int = 512, seed: int = 0):
    """Four well-separated classes in 8 dimensions: float32 rows and int64 labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(4, 8))
    labels = rng.integers(0, 4, size=rows)
    return (centres[labels] + rng.normal(0, 0.5, size=(rows, 8))).astype(np.float32), labels


@pytest.fixture(scope="module")
def trained(mesh):
    """Job "blobs", trained from arrays on the shared mesh; its progress messages and data."""
    inputs, labels = blobs()
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        progress = list(client.train(MODEL, inputs, labels, job="blobs", epochs=8, batch_size=32, micro_batches=2,
                                     optimizer="adam", learning_rate=0.01, stages=2, schedule="1f1b"))
    return progress, inputs, labels


def test_training_from_arrays_streams_progress_to_its_end(trained):
    progress, _, _ = trained
    steps = [p for p in progress if not p.evaluated and not p.done]
    evaluations = [p for p in progress if p.evaluated]
    assert [p.step for p in steps] == list(range(1, len(steps) + 1))
    assert steps[-1].total_steps == len(steps) and len(evaluations) == 8
    assert progress[-1].done and progress[-1].trace_json.startswith("{")
    assert steps[-1].loss < steps[0].loss / 4, (steps[0].loss, steps[-1].loss)
    assert evaluations[-1].validation_accuracy > 0.95, evaluations[-1]


def test_inference_answers_arrays_for_the_job_and_its_registered_model(mesh, trained):
    _, inputs, labels = trained
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        logits = client.infer(inputs[:100], job="blobs", micro_batches=4)
        assert logits.shape == (100, 4) and logits.dtype == np.float32
        classes, probabilities = client.predict(inputs[:100], model="blobs")
        assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        assert (classes == labels[:100]).mean() > 0.95
        registered = client.infer(inputs[:100], model="blobs:v1")
        assert np.allclose(registered, logits, atol=1e-5)
        # Integer rows (token ids, pixel counts) go as float32: the mesh takes no other inputs.
        whole = np.rint(inputs[:10]).astype(np.int64)
        assert np.allclose(client.infer(whole, job="blobs"), client.infer(whole.astype(np.float32), job="blobs"))


def test_a_job_that_discards_its_model_registers_none(mesh):
    inputs, labels = blobs(seed=7)
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        progress = list(client.train(MODEL, inputs, labels, job="blobs-trial", epochs=2, batch_size=32,
                                     discard_model=True))
        assert progress[-1].done
        job = client.get_job("blobs-trial")
        assert job.state == api.JOB_STATE_SUCCEEDED and job.model == "" and job.options.discard_model
        assert "blobs-trial" not in {m.name for m in client.list_models()}
        with pytest.raises(pipemesh.FailedPrecondition, match="discard_model"):
            client.infer(inputs[:4], job="blobs-trial")


def test_inputs_rescaled_in_training_are_rescaled_in_inference(mesh):
    inputs, labels = blobs(seed=4)
    raw = inputs * 100 + 1000
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        with pytest.raises(ValueError, match="normalize"):
            client.train(MODEL, raw, labels, normalize="z-score")
        list(client.train(MODEL, raw, labels, job="blobs-scaled", epochs=6, batch_size=32, optimizer="adam",
                          learning_rate=0.01, normalize="min-max"))
        scaling = client.get_job("blobs-scaled").options.normalization
        assert scaling.method == api.NORMALIZATION_METHOD_MIN_MAX
        # The training split's minimum and range, per feature: inside the whole data's.
        offset, scale = np.array(scaling.offset), np.array(scaling.scale)
        assert offset.shape == scale.shape == (8,) and (scale > 0).all()
        assert (offset >= raw.min(axis=0) - 1e-3).all() and (offset + scale <= raw.max(axis=0) + 1e-3).all()
        classes, _ = client.predict(raw[:100], job="blobs-scaled")
        assert (classes == labels[:100]).mean() > 0.95


def test_activations_and_gradients_may_travel_in_two_bytes(mesh):
    inputs, labels = blobs(seed=5)
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        with pytest.raises(ValueError, match="transfer_dtype"):
            client.train(MODEL, inputs, labels, transfer_dtype="int8")
        list(client.train(MODEL, inputs, labels, job="blobs-bfloat16", epochs=6, batch_size=32, optimizer="adam",
                          learning_rate=0.01, stages=2, transfer_dtype="bfloat16"))
        assert client.get_job("blobs-bfloat16").options.transfer_dtype == tensor_pb2.DTYPE_BFLOAT16
        classes, _ = client.predict(inputs[:100], job="blobs-bfloat16")
        assert (classes == labels[:100]).mean() > 0.95


def test_sync_replicas_may_reduce_by_ring(mesh):
    inputs, labels = blobs(seed=6)
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        with pytest.raises(ValueError, match="needs consistency 'sync'"):
            client.train(MODEL, inputs, labels, consistency="async", reduction="ring")
        list(client.train(MODEL, inputs, labels, job="blobs-ring", epochs=6, batch_size=32, optimizer="adam",
                          learning_rate=0.01, stages=1, replicas=2, reduction="ring"))
        job = client.get_job("blobs-ring")
        assert job.options.consistency.sync.reduction == ps_pb2.REDUCTION_RING and len(job.partitions) == 2
        classes, _ = client.predict(inputs[:100], job="blobs-ring")
        assert (classes == labels[:100]).mean() > 0.95


def test_linear_regression_in_closed_form(mesh):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    truth = np.array([[2.0], [-1.0], [0.5], [0.0]], dtype=np.float32)
    y = (x @ truth + 0.25 + rng.normal(0, 0.01, size=(300, 1))).astype(np.float32)
    linear = {"inputShape": ["4"], "layers": [{"dense": {"units": "1"}}], "loss": {"meanSquaredError": {}}}
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        solved = client.solve(linear, x, y[:, 0], name="closed-form")
        kernel = pipemesh.from_tensor(solved.kernel)
        assert kernel.shape == (4, 1) and np.allclose(kernel, truth, atol=0.01), kernel
        assert solved.validation_r2 > 0.999 and solved.model.name == "closed-form"
        assert np.allclose(client.infer(x[:5], model="closed-form"), x[:5] @ kernel + pipemesh.from_tensor(solved.bias),
                           atol=1e-4)


def test_jobs_and_models_are_listed_shown_and_exported(mesh, trained, tmp_path):
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        job = client.get_job("blobs")
        assert job.state == api.JOB_STATE_SUCCEEDED and client.has_ended(job) and job.model == "blobs:v1"
        assert not job.steps and not job.trace_json
        history = client.get_job("blobs", history=True)
        assert [s.step for s in history.steps] == list(range(1, job.total_steps + 1))
        assert history.steps[-1].loss < history.steps[0].loss and history.steps[-1].samples_per_second > 0
        assert history.trace_json.startswith("{")
        assert "blobs" in [j.job for j in client.list_jobs(state=api.JOB_STATE_SUCCEEDED)]
        assert [m.version for m in client.list_models("blobs")] == [1]
        record, weights = client.export_model("blobs", tmp_path / "blobs.safetensors")
        assert record.name == "blobs" and record.parameters == 8 * 32 + 32 + 32 * 4 + 4
        assert sorted(w.shape for w in weights.values()) == [(4,), (8, 32), (32,), (32, 4)]
        assert (tmp_path / "blobs.safetensors").stat().st_size == record.weights_bytes
        plan = client.plan(MODEL, stages=2)
        assert len(plan.stages) == 2
        # Split points inside a layer, in either spelling, and a plan kept to whole layers.
        for inside in (["0:3"], [(0, 3)]):
            stages = client.plan(MODEL, stages=2, split_points=inside, estimate=True).stages
            assert [(s.first_layer, s.first_layer_inputs, s.end_layer, s.end_layer_inputs) for s in stages] == [
                (0, 0, 0, 3), (0, 3, 2, 0)]
        whole = client.plan(MODEL, stages=2, whole_layers=True, estimate=True).stages
        assert [(s.first_layer_inputs, s.end_layer_inputs) for s in whole] == [(0, 0), (0, 0)]
        # Two layers in three stages: a sync job's LSTM splits at a time step; an async job's,
        # whose ps would apply each stage's share of its gradient apart, stays whole.
        recurrent = {"inputShape": ["8", "2"], "layers": [{"lstm": {"units": "16"}}, {"dense": {"units": "2"}}],
                     "loss": {"softmaxCrossEntropy": {}}}
        sync = client.plan(recurrent, stages=3, estimate=True).stages
        assert any(s.first_layer == 0 and s.first_layer_inputs > 0 for s in sync)
        apart = client.plan(recurrent, stages=3, estimate=True, consistency="async").stages
        assert len(apart) == 3 and not any(s.first_layer == 0 and s.first_layer_inputs > 0 for s in apart)
        with pytest.raises(ValueError, match="LAYER:INPUTS"):
            client.plan(MODEL, stages=2, split_points=["0:three"])
        one_f_one_b = client.plan(MODEL, stages=2, micro_batches=8, schedule="1f1b")
        zero_bubble = client.plan(MODEL, stages=2, micro_batches=8, schedule="zb-h1")
        if one_f_one_b.measured_on:  # the pool's partitions timed the model
            assert 0 < zero_bubble.predicted_step_seconds
            assert one_f_one_b.predicted_step_seconds > 0
        with pytest.raises(ValueError, match="schedule"):
            client.plan(MODEL, stages=2, schedule="interleaved")
        if one_f_one_b.measured_on:  # a free partition times the model for each micro-batch count
            chosen = client.plan(MODEL, stages=2, batch_size=16)
            assert sorted({c.micro_batches for c in chosen.choices}) == [1, 2, 4, 8, 16]
            assert chosen.choices[0].micro_batch_rows * chosen.choices[0].micro_batches == 16
            assert chosen.predicted_step_seconds == chosen.choices[0].predicted_step_seconds
        with pytest.raises(pipemesh.InvalidArgument, match="micro_batches cannot be given"):
            client.plan(MODEL, stages=2, batch_size=16, micro_batches=2)
        assert {m.state for m in client.pool().members} <= {api.MEMBER_STATE_FREE, api.MEMBER_STATE_BUSY}


def test_weights_from_the_callers_hands_are_uploaded(mesh, trained, tmp_path):
    _, inputs, _ = trained
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        record, weights = client.export_model("blobs", tmp_path / "exported.safetensors")
        expected = client.infer(inputs[:16], model="blobs")
        # A file of the caller's, and the arrays themselves (as weights trained elsewhere would be).
        # The split the job trained with, inside a layer or not.
        split = list(zip(record.split_points, record.split_point_inputs or [0] * len(record.split_points)))
        from_file = client.upload_model("blobs-file", record.spec, tmp_path / "exported.safetensors",
                                        split_points=split, normalization=record.normalization)
        assert (from_file.name, from_file.version, from_file.parameters) == ("blobs-file", 1, record.parameters)
        # Split where the job split it, as blobs is served: a layer split elsewhere would add its
        # sums in another order, equal to the last bits but not bit for bit.
        from_arrays = client.upload_model("blobs-arrays", record.spec, weights, split_points=split,
                                          normalization=record.normalization)
        assert from_arrays.version == 1
        for name in ("blobs-file", "blobs-arrays"):
            assert np.array_equal(client.infer(inputs[:16], model=name), expected), name
        # Arrays that do not fit the spec are refused, naming the tensor, and register nothing.
        wrong = dict(weights)
        kernel = next(key for key in wrong if key.endswith("kernel"))
        wrong[kernel] = wrong[kernel][:, :-1]
        with pytest.raises(pipemesh.InvalidArgument, match=f"tensor {kernel} in the uploaded file"):
            client.upload_model("blobs-wrong", record.spec, wrong)
        assert client.list_models("blobs-wrong") == []


def test_a_job_left_running_is_cancelled(mesh):
    inputs, labels = blobs(rows=2048)
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        stream = client.train(MODEL, inputs, labels, job="left", epochs=200, batch_size=16, stages=2)
        first = next(stream)
        stream.close()  # the caller goes away: the job runs on
        assert first.job == "left"
        assert client.get_job("left").state in (api.JOB_STATE_RUNNING, api.JOB_STATE_QUEUED)
        client.cancel_job("left")
        assert client.get_job("left").state == api.JOB_STATE_CANCELLED
        client.delete_job("left")
        with pytest.raises(pipemesh.NotFound):
            client.get_job("left")


def test_errors_are_typed_and_name_what_to_fix(mesh, trained):
    inputs, labels = blobs(rows=64)
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        with pytest.raises(pipemesh.InvalidArgument, match="batch_size 1 must be at least the number of micro-batches"):
            list(client.train(MODEL, inputs, labels, job="bad", batch_size=1, micro_batches=2))
        with pytest.raises(pipemesh.AlreadyExists, match="blobs"):
            list(client.train(MODEL, inputs, labels, job="blobs", epochs=1))
        with pytest.raises(pipemesh.NotFound):
            client.get_job("no-such-job")
        with pytest.raises(pipemesh.NotFound):
            client.infer(inputs, model="no-such-model")
        with pytest.raises(pipemesh.InvalidArgument) as refused:
            client.infer(np.zeros((2, 5), np.float32), job="blobs")
        assert refused.value.code.name == "INVALID_ARGUMENT" and "5" in refused.value.message
    with pytest.raises(ValueError, match="one target row per input"):
        pipemesh.Client("127.0.0.1:1").train(MODEL, inputs, labels[:3])
    with pytest.raises(ValueError, match="not a ModelSpec"):
        pipemesh.model_spec({"layers": [{"dense": {"unitz": 3}}]})


def test_a_token_is_sent_and_required(folder):
    tokens = folder / "tokens"
    token = "b" * 40
    tokens.write_text(f"bob user {token}\n")
    tokens.chmod(0o600)
    mesh = Mesh(folder / "tokens-mesh", partitions=1, coordinator_arguments=["--tokens-file", str(tokens)])
    try:
        with pipemesh.Client(mesh.coordinator.endpoint, token="") as anonymous:
            with pytest.raises(pipemesh.Unauthenticated):
                anonymous.list_jobs()
        with pipemesh.Client(mesh.coordinator.endpoint, token="x" * 40) as stranger:
            with pytest.raises(pipemesh.Unauthenticated):
                stranger.list_jobs()
        os.environ["PIPEMESH_TOKEN"] = token
        try:
            with pipemesh.Client(mesh.coordinator.endpoint) as bob:  # the token from PIPEMESH_TOKEN
                inputs, labels = blobs(rows=64)
                list(bob.train(MODEL, inputs, labels, job="bobs", epochs=1, batch_size=16, stages=1))
                assert bob.get_job("bobs").owner == "bob"
        finally:
            del os.environ["PIPEMESH_TOKEN"]
    finally:
        mesh.stop()


def test_mutual_tls_with_a_client_certificate(folder):
    certificates = folder / "tls"
    subprocess.run([str(binary()), "certs", "--out", str(certificates), "--users", "carol"], check=True,
                   capture_output=True)

    def role_arguments(role):
        return ["--tls-cert", str(certificates / f"{role}.crt"), "--tls-key", str(certificates / f"{role}.key"),
                "--tls-ca", str(certificates / "ca.crt")]
    mesh = Mesh(folder / "tls-mesh", partitions=1, role_arguments=role_arguments)
    try:
        tls = pipemesh.TLS(ca=certificates / "ca.crt", cert=certificates / "client.carol.crt",
                           key=certificates / "client.carol.key")
        with pipemesh.Client(mesh.coordinator.endpoint, tls=tls) as carol:
            inputs, labels = blobs(rows=64)
            list(carol.train(MODEL, inputs, labels, job="carols", epochs=1, batch_size=16, stages=1))
            assert carol.get_job("carols").owner == "carol"
        with pipemesh.Client(mesh.coordinator.endpoint, tls=pipemesh.TLS(ca=certificates / "ca.crt"),
                             timeout=10) as nobody:
            with pytest.raises(pipemesh.PipemeshError):
                nobody.list_jobs()
    finally:
        mesh.stop()


def test_the_stubs_describe_the_protos_as_they_are(tmp_path):
    """The committed stubs hold the descriptors protoc makes of protos/ now (scripts/generate-python-client)."""
    from grpc_tools import protoc
    root = REPOSITORY / "protos"
    protos = sorted(str(p.relative_to(root)) for p in (root / "pipemesh").rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    out = tmp_path / "descriptors.pb"
    assert protoc.main(["protoc", f"-I{root}", f"-I{include}", f"--descriptor_set_out={out}",
                        *protos]) == 0
    made = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}

    def without_json_names(messages):  # protoc's descriptor sets add them; generated code leaves them out
        for message in messages:
            for field in message.field:
                field.ClearField("json_name")
            without_json_names(message.nested_type)
    for expected in made.values():
        without_json_names(expected.message_type)
    assert len(made) == 7, sorted(made)
    for name, expected in made.items():
        module = importlib.import_module("pipemesh.v1." + Path(name).stem + "_pb2")
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert committed == expected, f"{name} changed: run scripts/generate-python-client"


def test_pip_installs_the_package(tmp_path):
    # From a copy: a build leaves build/ and *.egg-info beside the sources.
    source = shutil.copytree(REPOSITORY / "clients" / "python", tmp_path / "source",
                             ignore=shutil.ignore_patterns("__pycache__", "tests"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(source)],
                   check=True, capture_output=True, cwd=tempfile.gettempdir())
    shown = subprocess.run([sys.executable, "-c", "import pipemesh, pipemesh.v1.coordinator_pb2_grpc as g; "
                            "print(pipemesh.__file__, g.CoordinatorStub.__name__)"],
                           env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True,
                           cwd=tempfile.gettempdir())
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(str(target)) and "CoordinatorStub" in shown.stdout


@pytest.mark.parametrize("readme, job", [("README.md", "from-python"), ("clients/python/README.md", "quarters")])
def test_the_readmes_python_session_runs_as_written(mesh, readme, job, tmp_path, monkeypatch):
    """The first Python block of each README, against a live mesh in place of 127.0.0.1:7000."""
    import re
    block = re.search(r"```python\n(.*?)```", (REPOSITORY / readme).read_text(), re.S).group(1)
    monkeypatch.chdir(REPOSITORY)  # the blocks name examples/ as the README's reader would, from the root
    block = block.replace("127.0.0.1:7000", mesh.coordinator.endpoint).replace(
        '"quarters.safetensors"', repr(str(tmp_path / "quarters.safetensors")))
    exec(compile(block, readme, "exec"), {})
    with pipemesh.Client(mesh.coordinator.endpoint) as client:
        assert client.get_job(job).state == api.JOB_STATE_SUCCEEDED


def test_a_dataset_on_the_coordinators_data_directory_is_named_not_sent(folder):
    """`dataset=` names files in the coordinator's --data-dir: NumPy files as "x.npy,y.npy", or
    arrays of an archive by key; nothing outside the folder is read."""
    data = folder / "data"
    data.mkdir()
    inputs, labels = blobs(rows=256, seed=4)
    np.save(data / "x.npy", inputs)
    np.save(data / "y.npy", labels)
    np.savez(data / "blobs.npz", features=inputs, classes=labels)
    mesh = Mesh(folder / "data-mesh", coordinator_arguments=["--data-dir", str(data)])
    try:
        with pipemesh.Client(mesh.coordinator.endpoint) as client:
            for job, dataset in [("from-files", "x.npy,y.npy"),
                                 ("from-archive", {"uri": "blobs.npz", "inputs_key": "features",
                                                   "labels_key": "classes"})]:
                progress = list(client.train(MODEL, dataset=dataset, job=job, epochs=4, batch_size=32,
                                             optimizer="adam", learning_rate=0.01, stages=2))
                assert progress[-1].done
                evaluations = [p for p in progress if p.evaluated]
                assert evaluations[-1].validation_accuracy > 0.9, evaluations[-1]
            with pytest.raises(pipemesh.PermissionDenied):
                list(client.train(MODEL, dataset="x.npy,../y.npy", job="escaping", epochs=1))
    finally:
        mesh.stop()

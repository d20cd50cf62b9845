"""The Helm chart, linted and rendered offline through helm-python-sdk
(Helm's Go SDK in a shared library): with default values and with a bigger
mesh (3 stages x 2 replicas, 2 ps tasks, TLS, custom resources), asserting on
the rendered objects; and values.schema.json rejecting bad values."""

from __future__ import annotations

import copy
import base64
import json
import subprocess
import re
from collections import Counter
from typing import Any

import pytest
import yaml

from conftest import CHART, REPOSITORY

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is not installed (python3 -m pip install helm-python-sdk)")

RELEASE = "demo"
DASHBOARD = CHART / "dashboards" / "pipemesh.json"
NAMESPACE = "ml"
PS_PORT, PARTITION_PORT, COORDINATOR_PORT = 7100, 7200, 7000

BIG = {
    "ps": {"tasks": 2, "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}},
    "partition": {
        "blasThreads": 4,
        "maxKeptMiB": 2048,
        "resources": {"requests": {"cpu": "4", "memory": "6Gi"}, "limits": {"memory": "12Gi"}},
        "stages": [
            {"replicas": 2},
            {"replicas": 2, "blasThreads": 8, "resources": {"requests": {"cpu": "8", "memory": "10Gi"}}},
            {"replicas": 2, "nodeSelector": {"pipemesh/pool": "gpu"}},
        ],
    },
    "tls": {"enabled": True, "secretName": "pipemesh-tls"},
    "metrics": {"enabled": True},
    "image": {"repository": "registry.example/pipemesh", "tag": "1.2.3", "pullPolicy": "Always"},
    "coordinator": {"datasetsDir": "/opt/pipemesh/datasets"},
}


@pytest.fixture(scope="module")
def chart() -> Any:
    loaded = helm.Chart.load(CHART)
    yield loaded
    loaded.close()


def render(chart: Any, values: dict[str, Any] | None = None, name: str = RELEASE) -> list[dict[str, Any]]:
    manifests = chart.render(values, name=name, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(document for document in yaml.safe_load_all(text) if document)
    return objects


def notes(chart: Any, values: dict[str, Any] | None = None) -> str:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in objects if item["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def environment(workload: dict[str, Any]) -> dict[str, Any]:
    """The container's env as name -> value (or valueFrom)."""
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in container(workload).get("env", [])}


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return by_kind(objects, "StatefulSet")


def declared_options() -> set[str]:
    """Every --option the pipemesh executable declares (swift-argument-parser
    turns `var blasThreads` into --blas-threads)."""
    options = set()
    for source in (REPOSITORY / "Sources" / "pipemesh").rglob("*.swift"):
        for name in re.findall(r"@Option\((?:[^()]|\([^()]*\))*\)\s*var\s+(\w+)", source.read_text()):
            options.add("--" + re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower())
    return options


def ps_name(task: int) -> str:
    return f"{RELEASE}-pipemesh-ps-{task}.{RELEASE}-pipemesh-ps.{NAMESPACE}.svc.cluster.local:{PS_PORT}"


def partition_name(stage: int, replica: int) -> str:
    service = f"{RELEASE}-pipemesh-stage-{stage}"
    return f"{service}-{replica}.{service}.{NAMESPACE}.svc.cluster.local:{PARTITION_PORT}"


@pytest.fixture(scope="module")
def default_objects(chart: Any) -> list[dict[str, Any]]:
    return render(chart)


@pytest.fixture(scope="module")
def plaintext_objects(chart: Any) -> list[dict[str, Any]]:
    return render(chart, {"tls": {"enabled": False}})


@pytest.fixture(scope="module")
def big_objects(chart: Any) -> list[dict[str, Any]]:
    return render(chart, BIG)


# Lint ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, BIG], ids=["default", "big"])
def test_lint_is_clean(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_lint_reports_a_broken_template(tmp_path: Any) -> None:
    """Lint can fail: the same chart with a template that does not parse."""
    import shutil

    copy_ = tmp_path / "pipemesh"
    shutil.copytree(CHART, copy_)
    (copy_ / "templates" / "broken.yaml").write_text("kind: {{ .Values.nothing.deeper }\n")
    report = helm.lint(copy_, strict=True)
    assert report["errors"] or any(message["severity"] == 3 for message in report["messages"]), report


# Default values -----------------------------------------------------------------------------------


def test_default_objects(default_objects: list[dict[str, Any]]) -> None:
    kinds = Counter(item["kind"] for item in default_objects)
    assert kinds == Counter({"StatefulSet": 4, "Service": 4, "Secret": 2})
    statefulsets = by_kind(default_objects, "StatefulSet")
    assert {name: item["spec"]["replicas"] for name, item in statefulsets.items()} == {
        f"{RELEASE}-pipemesh-ps": 1, f"{RELEASE}-pipemesh-stage-0": 1, f"{RELEASE}-pipemesh-stage-1": 1,
        f"{RELEASE}-pipemesh-coordinator": 1}
    assert all(item["metadata"]["namespace"] == NAMESPACE for item in default_objects)


def test_every_object_carries_the_recommended_labels(default_objects: list[dict[str, Any]],
                                                     big_objects: list[dict[str, Any]]) -> None:
    for item in default_objects + big_objects:
        labels = item["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "pipemesh"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "pipemesh"
        assert labels["app.kubernetes.io/component"] in {"ps", "partition", "coordinator", "tls"}
        assert labels["helm.sh/chart"].startswith("pipemesh-")


def test_ps_statefulset_claims_a_checkpoint_volume(default_objects: list[dict[str, Any]]) -> None:
    ps = by_kind(default_objects, "StatefulSet")[f"{RELEASE}-pipemesh-ps"]
    claims = ps["spec"]["volumeClaimTemplates"]
    assert [claim["metadata"]["name"] for claim in claims] == ["checkpoints"]
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container(ps)["volumeMounts"]}
    assert flag(container(ps)["args"], "--checkpoint-dir") == mounts["checkpoints"]
    assert ps["spec"]["serviceName"] == f"{RELEASE}-pipemesh-ps"


def test_coordinator_statefulset_claims_a_state_volume(chart: Any, default_objects: list[dict[str, Any]]) -> None:
    """The coordinator keeps its jobs, model registry and model weights on its
    claim, mounted where --state-dir points; the claim follows coordinator.persistence."""
    coordinator = by_kind(default_objects, "StatefulSet")[f"{RELEASE}-pipemesh-coordinator"]
    claims = coordinator["spec"]["volumeClaimTemplates"]
    assert [claim["metadata"]["name"] for claim in claims] == ["state"]
    persistence = chart.values["coordinator"]["persistence"]
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == persistence["size"] == "5Gi"
    assert claims[0]["spec"]["accessModes"] == persistence["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claims[0]["spec"]
    assert claims[0]["metadata"]["labels"]["app.kubernetes.io/component"] == "coordinator"
    mounts = {mount["name"]: mount["mountPath"] for mount in container(coordinator)["volumeMounts"]}
    assert flag(container(coordinator)["args"], "--state-dir") == mounts["state"] == "/var/lib/pipemesh/state"
    overridden = render(chart, {"coordinator": {"persistence": {"size": "50Gi", "storageClassName": "fast-ssd"}}})
    claim = by_kind(overridden, "StatefulSet")[f"{RELEASE}-pipemesh-coordinator"]["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_headless_services_select_their_pods(default_objects: list[dict[str, Any]],
                                             big_objects: list[dict[str, Any]]) -> None:
    for objects in (default_objects, big_objects):
        services = by_kind(objects, "Service")
        for name, statefulset in by_kind(objects, "StatefulSet").items():
            service = services[statefulset["spec"]["serviceName"]]
            # The coordinator's Service is the one users call, not a headless one.
            if not name.endswith("-coordinator"):
                assert service["spec"]["clusterIP"] == "None", name
            pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
            assert service["spec"]["selector"].items() <= pod_labels.items(), name
            assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), name
        # No two workloads' pods match one another's selector.
        selectors = [item["spec"]["selector"]["matchLabels"] for item in objects
                     if item["kind"] == "StatefulSet"]
        assert len({json.dumps(selector, sort_keys=True) for selector in selectors}) == len(selectors)


def grpc_probes(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {kind: container(workload)[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}


@pytest.mark.parametrize("workload,port,service", [
    (f"{RELEASE}-pipemesh-ps", PS_PORT, "pipemesh.v1.ParameterServer"),
    (f"{RELEASE}-pipemesh-stage-0", PARTITION_PORT, "pipemesh.v1.Partition"),
    (f"{RELEASE}-pipemesh-stage-1", PARTITION_PORT, "pipemesh.v1.Partition"),
    (f"{RELEASE}-pipemesh-coordinator", COORDINATOR_PORT, "pipemesh.v1.Coordinator"),
])
def test_plaintext_probes_ask_grpc_health(plaintext_objects: list[dict[str, Any]], workload: str, port: int,
                                          service: str) -> None:
    default_objects = plaintext_objects
    probes = grpc_probes(workloads(default_objects)[workload])
    assert probes["readinessProbe"]["grpc"] == {"port": port, "service": service}
    assert probes["livenessProbe"]["grpc"] == {"port": port, "service": ""}
    assert probes["startupProbe"]["grpc"] == {"port": port, "service": ""}
    assert all("tcpSocket" not in probe for probe in probes.values())
    ports = {entry["name"]: entry["containerPort"] for entry in container(workloads(default_objects)[workload])["ports"]}
    assert ports == {"grpc": port}
    assert flag(container(workloads(default_objects)[workload])["args"], "--listen") == f"0.0.0.0:{port}"


def test_plaintext_has_no_tls_and_default_no_metrics(plaintext_objects: list[dict[str, Any]],
                                                     default_objects: list[dict[str, Any]]) -> None:
    assert "Secret" not in {item["kind"] for item in plaintext_objects}
    for name, item in workloads(plaintext_objects).items():
        args = container(item)["args"]
        assert not {"--tls-cert", "--tls-key", "--tls-ca", "--metrics-listen"} & set(args), name
        volumes = item["spec"]["template"]["spec"]["volumes"]
        assert all("secret" not in volume for volume in volumes), name
        assert all(mount["name"] != "tls" for mount in container(item)["volumeMounts"]), name
    for name, item in workloads(default_objects).items():
        assert "--metrics-listen" not in container(item)["args"], name
        assert "PIPEMESH_METRICS_LISTEN" not in environment(item), name
        assert "metrics" not in {port["name"] for port in container(item)["ports"]}, name


def test_default_runs_mutual_tls_with_a_certificate_per_role(default_objects: list[dict[str, Any]], tmp_path: Any) -> None:
    """By default the chart makes a CA and a certificate per role, named for
    it and valid for the names the services dial; each role presents its own."""
    secrets = by_kind(default_objects, "Secret")
    files = {key: base64.b64decode(value) for key, value in secrets[f"{RELEASE}-pipemesh-tls"]["data"].items()}
    assert set(files) == {"ca.crt"} | {f"{role}.{kind}" for role in ("coordinator", "partition", "ps") for kind in ("crt", "key")}
    admin = {key: base64.b64decode(value) for key, value in secrets[f"{RELEASE}-pipemesh-admin"]["data"].items()}
    assert set(admin) == {"ca.crt", "admin.admin.crt", "admin.admin.key"} and admin["ca.crt"] == files["ca.crt"]
    files.update(admin)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for role in ("coordinator", "partition", "ps", "admin.admin"):
        verified = subprocess.run(["openssl", "verify", "-CAfile", tmp_path / "ca.crt", tmp_path / f"{role}.crt"],
                                  capture_output=True, text=True)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName", "-in",
                                  tmp_path / f"{role}.crt"], capture_output=True, text=True).stdout
        assert f"CN = {role}" in subject, subject
    services = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", tmp_path / "ps.crt"],
                              capture_output=True, text=True).stdout
    assert f"DNS:*.{RELEASE}-pipemesh-ps.{NAMESPACE}.svc.cluster.local" in services, services
    assert f"DNS:*.{RELEASE}-pipemesh-stage-1.{NAMESPACE}.svc.cluster.local" in services, services
    assert f"DNS:{RELEASE}-pipemesh-coordinator.{NAMESPACE}.svc.cluster.local" in services, services
    for name, item in workloads(default_objects).items():
        role = "coordinator" if "coordinator" in name else "partition" if "-stage-" in name else "ps"
        args = container(item)["args"]
        assert flag(args, "--tls-cert") == f"/etc/pipemesh/tls/{role}.crt", name
        assert flag(args, "--tls-key") == f"/etc/pipemesh/tls/{role}.key", name
        assert flag(args, "--tls-ca") == "/etc/pipemesh/tls/ca.crt", name
        volumes = {volume["name"]: volume for volume in item["spec"]["template"]["spec"]["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == f"{RELEASE}-pipemesh-tls", name
        # A pod gets its own role's key and nobody else's.
        assert {entry["path"] for entry in volumes["tls"]["secret"]["items"]} == {"ca.crt", f"{role}.crt", f"{role}.key"}, name
        assert all("grpc" not in probe and probe["tcpSocket"] == {"port": "grpc"} for probe in grpc_probes(item).values()), name


@pytest.mark.parametrize("objects", ["default_objects", "big_objects"])
def test_every_flag_passed_is_an_option_of_the_binary(request: pytest.FixtureRequest, objects: str) -> None:
    """An option the binary does not declare stops it at start (exit 64), so
    the chart passes only declared ones as flags; options still to come go as
    PIPEMESH_* variables, which a binary without them ignores."""
    declared = declared_options()
    assert {"--listen", "--tls-cert", "--checkpoint-dir", "--ps", "--partitions"} <= declared, declared
    for name, item in workloads(request.getfixturevalue(objects)).items():
        passed = {arg for arg in container(item)["args"] if arg.startswith("--")}
        assert passed <= declared, f"{name} passes options the binary lacks: {sorted(passed - declared)}"


def test_partitions_advertise_the_names_the_coordinator_dials(default_objects: list[dict[str, Any]],
                                                              big_objects: list[dict[str, Any]]) -> None:
    for objects in (default_objects, big_objects):
        coordinator = container(by_kind(objects, "StatefulSet")[f"{RELEASE}-pipemesh-coordinator"])
        dialled = flag(coordinator["args"], "--partitions").replace(";", ",").split(",")
        advertised = []
        for name, statefulset in sorted(by_kind(objects, "StatefulSet").items()):
            if "-stage-" not in name:
                continue
            assert environment(statefulset)["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            template = flag(container(statefulset)["args"], "--advertise")
            # Kubernetes expands $(POD_NAME) in args; pods are <statefulset>-<ordinal>.
            advertised += [template.replace("$(POD_NAME)", f"{name}-{ordinal}")
                           for ordinal in range(statefulset["spec"]["replicas"])]
        assert advertised == dialled


def test_ps_tasks_keep_a_lease_under_the_names_the_coordinator_lists(default_objects: list[dict[str, Any]],
                                                                    big_objects: list[dict[str, Any]]) -> None:
    for objects in (default_objects, big_objects):
        statefulsets = by_kind(objects, "StatefulSet")
        coordinator = container(statefulsets[f"{RELEASE}-pipemesh-coordinator"])
        ps = statefulsets[f"{RELEASE}-pipemesh-ps"]
        assert environment(ps)["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        args = container(ps)["args"]
        advertised = [flag(args, "--advertise").replace("$(POD_NAME)", f"{RELEASE}-pipemesh-ps-{ordinal}")
                      for ordinal in range(ps["spec"]["replicas"])]
        assert advertised == flag(coordinator["args"], "--ps").split(",")
        assert flag(args, "--join").startswith(f"{RELEASE}-pipemesh-coordinator.")


def test_partitions_dial_only_the_mesh(default_objects: list[dict[str, Any]], big_objects: list[dict[str, Any]]) -> None:
    """A partition dials only the ps tasks and partitions the coordinator lists."""
    for objects in (default_objects, big_objects):
        coordinator = container(by_kind(objects, "StatefulSet")[f"{RELEASE}-pipemesh-coordinator"])
        mesh = flag(coordinator["args"], "--ps").split(",") + flag(coordinator["args"], "--partitions").replace(";", ",").split(",")
        for name, statefulset in by_kind(objects, "StatefulSet").items():
            if "-stage-" in name:
                assert flag(container(statefulset)["args"], "--peers").split(",") == mesh, name


def test_coordinator_dials_every_task_and_partition_by_dns_name(default_objects: list[dict[str, Any]]) -> None:
    coordinator = by_kind(default_objects, "StatefulSet")[f"{RELEASE}-pipemesh-coordinator"]
    args = container(coordinator)["args"]
    assert args[:2] == ["serve", "coordinator"]
    assert flag(args, "--ps") == ps_name(0)
    assert flag(args, "--partitions") == f"{partition_name(0, 0)};{partition_name(1, 0)}"
    assert coordinator["spec"]["replicas"] == 1
    assert coordinator["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert coordinator["spec"]["serviceName"] == f"{RELEASE}-pipemesh-coordinator"


def test_coordinator_finds_the_bundled_datasets_and_mounts_no_model(
        default_objects: list[dict[str, Any]], big_objects: list[dict[str, Any]]) -> None:
    """PIPEMESH_DATASETS points where the image holds datasets/ (docs/operations.md's image puts them
    in /usr/share/pipemesh/datasets); nothing mounts a model spec no process reads."""
    coordinator = by_kind(default_objects, "StatefulSet")[f"{RELEASE}-pipemesh-coordinator"]
    assert environment(coordinator)["PIPEMESH_DATASETS"] == "/usr/share/pipemesh/datasets"
    assert "ENV PIPEMESH_DATASETS=/usr/share/pipemesh/datasets" in (REPOSITORY / "docs" / "operations.md").read_text()
    big = by_kind(big_objects, "StatefulSet")[f"{RELEASE}-pipemesh-coordinator"]
    assert environment(big)["PIPEMESH_DATASETS"] == "/opt/pipemesh/datasets"
    assert all("model" not in mount["name"] for mount in container(coordinator)["volumeMounts"])
    assert not by_kind(default_objects, "ConfigMap")


def test_workloads_run_unprivileged(default_objects: list[dict[str, Any]]) -> None:
    for item in default_objects:
        if item["kind"] == "StatefulSet":
            pod = item["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            security = container(item)["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container(item)["image"] == "pipemesh:0.1.0"
            assert container(item)["command"] == ["/usr/local/bin/pipemesh"]


# A bigger mesh ------------------------------------------------------------------------------------


def test_big_mesh_objects(big_objects: list[dict[str, Any]]) -> None:
    kinds = Counter(item["kind"] for item in big_objects)
    assert kinds == Counter({"StatefulSet": 5, "Service": 5})
    statefulsets = by_kind(big_objects, "StatefulSet")
    assert {name: item["spec"]["replicas"] for name, item in statefulsets.items()} == {
        f"{RELEASE}-pipemesh-ps": 2,
        f"{RELEASE}-pipemesh-stage-0": 2, f"{RELEASE}-pipemesh-stage-1": 2, f"{RELEASE}-pipemesh-stage-2": 2,
        f"{RELEASE}-pipemesh-coordinator": 1}
    for name, statefulset in statefulsets.items():
        assert container(statefulset)["image"] == "registry.example/pipemesh:1.2.3", name
        assert container(statefulset)["imagePullPolicy"] == "Always", name


def test_big_mesh_coordinator_lists_everything_in_order(big_objects: list[dict[str, Any]]) -> None:
    args = container(by_kind(big_objects, "StatefulSet")[f"{RELEASE}-pipemesh-coordinator"])["args"]
    assert flag(args, "--ps") == f"{ps_name(0)},{ps_name(1)}"
    stages = [f"{partition_name(stage, 0)},{partition_name(stage, 1)}" for stage in range(3)]
    assert flag(args, "--partitions") == ";".join(stages)


def test_big_mesh_resources_and_overrides(big_objects: list[dict[str, Any]]) -> None:
    statefulsets = by_kind(big_objects, "StatefulSet")
    assert container(statefulsets[f"{RELEASE}-pipemesh-ps"])["resources"] == BIG["ps"]["resources"]
    stage = lambda index: statefulsets[f"{RELEASE}-pipemesh-stage-{index}"]  # noqa: E731
    assert container(stage(0))["resources"] == BIG["partition"]["resources"]
    assert container(stage(1))["resources"] == BIG["partition"]["stages"][1]["resources"]
    assert [flag(container(stage(index))["args"], "--blas-threads") for index in range(3)] == ["4", "8", "4"]
    assert all(environment(stage(index))["PIPEMESH_MAX_KEPT_MIB"] == "2048" for index in range(3))
    assert stage(2)["spec"]["template"]["spec"]["nodeSelector"] == {"pipemesh/pool": "gpu"}
    assert "nodeSelector" not in stage(0)["spec"]["template"]["spec"]


def test_big_mesh_mounts_tls_and_passes_its_flags(big_objects: list[dict[str, Any]]) -> None:
    assert len(workloads(big_objects)) == 5
    for name, workload in workloads(big_objects).items():
        volumes = {volume["name"]: volume for volume in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "pipemesh-tls", name
        mounts = {mount["name"]: mount for mount in container(workload)["volumeMounts"]}
        assert mounts["tls"]["readOnly"] is True, name
        directory = mounts["tls"]["mountPath"]
        args = container(workload)["args"]
        assert flag(args, "--tls-cert") == f"{directory}/tls.crt", name
        assert flag(args, "--tls-key") == f"{directory}/tls.key", name
        assert flag(args, "--tls-ca") == f"{directory}/ca.crt", name
        # Kubernetes' gRPC probes speak plaintext: with TLS they check the port.
        for kind, probe in grpc_probes(workload).items():
            assert "grpc" not in probe and probe["tcpSocket"] == {"port": "grpc"}, (name, kind)


def test_big_mesh_serves_metrics(big_objects: list[dict[str, Any]]) -> None:
    for item in big_objects:
        if item["kind"] == "StatefulSet":
            assert environment(item)["PIPEMESH_METRICS_LISTEN"] == "0.0.0.0:9464"
            assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in container(item)["ports"]
            assert item["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9464"


def test_the_grafana_dashboard_is_a_config_map_only_when_asked(chart: Any, big_objects: list[dict[str, Any]]) -> None:
    assert f"{RELEASE}-pipemesh-dashboard" not in by_kind(big_objects, "ConfigMap")
    objects = render(chart, {**BIG, "metrics": {"enabled": True, "grafanaDashboard": True}})
    config_map = by_kind(objects, "ConfigMap")[f"{RELEASE}-pipemesh-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["pipemesh.json"]) == json.loads(DASHBOARD.read_text())


def test_the_dashboard_asks_only_for_documented_metrics() -> None:
    """Every series the dashboard queries is in docs/operations.md's table of what the services expose
    (and OperationsTests checks the coordinator's against a live one)."""
    dashboard = json.loads(DASHBOARD.read_text())
    queried = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queried |= {re.sub(r"_(bucket|sum|count)$", "", name)
                        for name in re.findall(r"\b(pipemesh_[a-z_]+)", target["expr"])}
    documented = set(re.findall(r"`(pipemesh_[a-z_]+)", (REPOSITORY / "docs" / "operations.md").read_text()))
    assert queried and queried <= documented, sorted(queried - documented)
    assert {"pipemesh_job_loss", "pipemesh_job_step_seconds", "pipemesh_job_bubble_fraction"} <= queried


def test_notes_name_what_tls_certificates_must_cover(chart: Any) -> None:
    text = notes(chart, BIG)
    assert f"*.{RELEASE}-pipemesh-ps.{NAMESPACE}.svc.cluster.local" in text
    assert f"*.{RELEASE}-pipemesh-stage-2.{NAMESPACE}.svc.cluster.local" in text
    assert "-plaintext" not in text
    made = notes(chart)
    assert "-plaintext" not in made and f"get secret {RELEASE}-pipemesh-admin" in made and "admin.admin.crt" in made
    assert "grpcurl -plaintext" in notes(chart, {"tls": {"enabled": False}})


def test_long_release_names_stay_within_kubernetes_limits(chart: Any) -> None:
    name = "a-release-name-that-is-long-enough-to-hit-limits"[:53]
    for item in render(chart, {"partition": {"stages": [{"replicas": 1}] * 12}}, name=name):
        assert len(item["metadata"]["name"]) <= 63, item["metadata"]["name"]
        if item["kind"] == "StatefulSet":
            # Kubernetes appends "-<10-character hash>" for the controller-revision-hash label.
            assert len(item["metadata"]["name"]) <= 52, item["metadata"]["name"]


# Schema -------------------------------------------------------------------------------------------


def test_schema_describes_every_default_value(chart: Any) -> None:
    schema = chart.schema
    assert schema is not None

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def walk(values: Any, node: dict[str, Any], path: str) -> None:
        node = resolve(node)
        assert "type" in node, f"{path} has no type in values.schema.json"
        if isinstance(values, dict) and "properties" in node:
            for key, value in values.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(value, node["properties"][key], f"{path}.{key}")
        elif isinstance(values, list) and isinstance(node.get("items"), dict):
            for index, value in enumerate(values):
                walk(value, node["items"], f"{path}[{index}]")

    walk(chart.values, schema, "values")


def with_value(path: str, value: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    keys = path.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return values


BAD_VALUES = [
    ("ps.tasks", -1, "minimum"),
    ("ps.tasks", 0, "minimum"),
    ("ps.port", "7100", "want integer"),
    ("coordinator.service.port", 70000, "maximum"),
    ("partition.stages", [{"replicas": -2}], "minimum"),
    ("partition.stages", [], "minItems"),
    ("partition.blasThreads", 1.5, "want integer"),
    ("image.pullPolicy", "Sometimes", "one of"),
    ("coordinator.service.type", "Ingress", "one of"),
    ("ps.persistence.size", "ten gigs", "pattern"),
    ("ps.resources", {"requests": {"cpu": "lots"}}, "pattern"),
    ("partition.replicas", 2, "additional properties"),
]


@pytest.mark.parametrize("path,value,complaint", BAD_VALUES, ids=[f"{path}={value!r}" for path, value, _ in BAD_VALUES])
def test_schema_rejects_bad_values(chart: Any, path: str, value: Any, complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError) as raised:
        chart.render(with_value(path, value), name=RELEASE, namespace=NAMESPACE)
    assert complaint in str(raised.value)
    assert "/" + path.replace(".", "/").split("/")[0] in str(raised.value)


GOOD_VALUES = [
    ("ps.tasks", 3), ("ps.port", 7101), ("coordinator.service.port", 443),
    ("partition.stages", [{"replicas": 2}]), ("partition.blasThreads", 2), ("image.pullPolicy", "Never"),
    ("coordinator.service.type", "LoadBalancer"), ("tls", {"enabled": True, "secretName": "s"}),
    ("ps.persistence.size", "500Gi"), ("ps.resources", {"requests": {"cpu": "250m"}}),
]


@pytest.mark.parametrize("path,value", GOOD_VALUES, ids=[f"{path}={value!r}" for path, value in GOOD_VALUES])
def test_schema_accepts_good_values(chart: Any, path: str, value: Any) -> None:
    """The other side of the rejections above: the same keys with sound values render."""
    assert render(chart, with_value(path, value))


def test_defaults_are_not_mutated_by_merging(chart: Any) -> None:
    before = copy.deepcopy(chart.values)
    render(chart, BIG)
    assert chart.values == before


def test_the_dashboard_listens_on_the_pods_loopback_and_only_without_tls(chart: Any) -> None:
    coordinator = container(workloads(render(chart, {"tls": {"enabled": False}, "coordinator": {"dashboardPort": 7080}}))[
        f"{RELEASE}-pipemesh-coordinator"])
    assert flag(coordinator["args"], "--dashboard-listen") == "127.0.0.1:7080"
    assert flag(container(workloads(render(chart, {"tls": {"enabled": False}}))[f"{RELEASE}-pipemesh-coordinator"])["args"],
                "--dashboard-listen") is None
    with pytest.raises(Exception) as raised:
        render(chart, {"coordinator": {"dashboardPort": 7080}})
    assert "tls.enabled=false" in str(raised.value)

"""The systemd units: `systemd-analyze verify` accepts each of them, installed
in a temporary root, with no warning; their content has what the services
rely on (Type=notify with a watchdog, hardening, state directories, template
instances); the example environment files set only options that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import (
    SERVICES,
    SYSTEMD,
    UNITS,
    parse_environment,
    parse_unit,
    run,
    value_of,
    values_of,
    verify,
)

ROLES = {
    "pipemesh-ps@.service": "ps",
    "pipemesh-partition@.service": "partition",
    "pipemesh-coordinator.service": "coordinator",
}

# The options of `pipemesh serve <role>`, as PIPEMESH_<OPTION> (the contract).
COMMON_OPTIONS = {
    "LISTEN", "GRACE_SECONDS", "TLS_CERT", "TLS_KEY", "TLS_CA", "MAX_MESSAGE_MIB", "METRICS_LISTEN",
}
ROLE_OPTIONS = {
    "ps": {"CHECKPOINT_DIR", "CHECKPOINT_SECONDS", "CHECKPOINT_KEEP", "MEMORY_BUDGET_MIB", "MAX_VARIABLE_MIB", "JOIN", "ADVERTISE"},
    "partition": {"ADVERTISE", "BLAS_THREADS", "MAX_KEPT_MIB", "PEERS", "MEMORY_BUDGET_MIB", "JOIN", "SHARED_MEMORY"},
    "coordinator": {"PS", "PARTITIONS", "DATA_DIR", "TOKENS_FILE", "STATE_DIR", "MAX_INFERENCE_BATCH", "DASHBOARD_LISTEN"},
}
# Read from the environment only (no option): where the bundled datasets are.
ENVIRONMENT_ONLY = {"DATASETS"}


def unit(name: str) -> dict[str, list[tuple[str, str]]]:
    return parse_unit((SYSTEMD / name).read_text())


def test_every_unit_in_the_repository_is_checked() -> None:
    shipped = {path.name for path in SYSTEMD.iterdir() if path.suffix in {".service", ".target", ".slice", ".socket", ".timer"}}
    assert shipped == set(UNITS), "a unit file was added or removed: update UNITS in conftest.py"


@pytest.mark.parametrize("template", list(UNITS))
def test_systemd_analyze_verify_accepts_the_unit(verify_root: Path, template: str) -> None:
    result = verify(verify_root, UNITS[template])
    # verify exits 0 on many problems (an unknown key, a bad value: "ignoring"),
    # so any output at all fails the test.
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", (
        f"systemd-analyze verify {UNITS[template]}: exit {result.returncode}\n{result.stderr}{result.stdout}")


def test_verify_reports_a_broken_unit(verify_root: Path) -> None:
    """The check above can fail: a unit with a bad value and one whose
    executable is missing are both reported."""
    units = verify_root / "etc/systemd/system"
    text = (units / "pipemesh-ps@.service").read_text()
    (units / "pipemesh-broken@.service").write_text(text.replace("Type=notify", "Type=notifyy"))
    (units / "pipemesh-missing@.service").write_text(
        text.replace("ExecStart=/usr/local/bin/pipemesh", "ExecStart=/usr/local/bin/pipemesh-missing"))
    try:
        broken = verify(verify_root, "pipemesh-broken@0.service")
        assert "Failed to parse service type" in broken.stderr, broken.stderr
        missing = verify(verify_root, "pipemesh-missing@0.service")
        assert missing.returncode != 0 and "pipemesh-missing" in missing.stderr, missing.stderr
    finally:
        (units / "pipemesh-broken@.service").unlink()
        (units / "pipemesh-missing@.service").unlink()


@pytest.mark.parametrize("name", SERVICES)
def test_security_exposure_is_low(verify_root: Path, name: str) -> None:
    # systemd's own scale: 0 is fully locked down, 10 is fully exposed; the
    # threshold is in tenths. Ours score about 1.4 ("OK"); 2.0 leaves room
    # for a deliberate change, not for dropping a group of settings.
    result = run("systemd-analyze", "security", "--offline=yes", f"--root={verify_root}", "--threshold=20",
                 "--no-pager", UNITS[name])
    summary = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert result.returncode == 0, f"{UNITS[name]}: {summary or result.stderr}"
    assert summary, result.stdout + result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_service_notifies_systemd_and_restarts(name: str) -> None:
    service = unit(name)["Service"]
    assert value_of(service, "Type") == "notify"
    assert value_of(service, "NotifyAccess") == "main"
    assert value_of(service, "WatchdogSec") == "30s"
    assert value_of(service, "Restart") == "on-failure"
    assert value_of(service, "RestartPreventExitStatus") == "64"
    assert value_of(service, "ExecStart") == f"/usr/local/bin/pipemesh serve {ROLES[name]}"


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_hardened(name: str) -> None:
    service = unit(name)["Service"]
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes", "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes", "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "User": "pipemesh", "Group": "pipemesh", "Slice": "pipemesh.slice",
    }
    assert {key: value_of(service, key) for key in expected} == expected
    assert "@system-service" in values_of(service, "SystemCallFilter")
    assert int(value_of(service, "LimitNOFILE")) >= 65536
    assert int(value_of(service, "TasksMax")) > 0
    for key in ("DynamicUser", "PermissionsStartOnly"):
        assert not values_of(service, key), f"{key}= is set"


def test_slice_bounds_memory_of_every_service() -> None:
    slice_ = unit("pipemesh.slice")["Slice"]
    assert re.fullmatch(r"\d+%", value_of(slice_, "MemoryMax"))
    assert int(value_of(slice_, "TasksMax")) > 0


@pytest.mark.parametrize("name", SERVICES)
def test_service_belongs_to_the_target(name: str) -> None:
    sections = unit(name)
    assert "pipemesh.target" in values_of(sections["Unit"], "PartOf")
    assert value_of(sections["Install"], "WantedBy") == "pipemesh.target"
    assert "network-online.target" in values_of(sections["Unit"], "After")
    assert "network-online.target" in values_of(sections["Unit"], "Wants")


def test_target_starts_with_the_system() -> None:
    target = unit("pipemesh.target")
    assert value_of(target["Install"], "WantedBy") == "multi-user.target"


def test_environment_files_shared_then_per_unit() -> None:
    files = {name: values_of(unit(name)["Service"], "EnvironmentFile") for name in SERVICES}
    assert files == {
        "pipemesh-ps@.service": ["/etc/pipemesh/pipemesh.env", "-/etc/pipemesh/ps-%i.env"],
        "pipemesh-partition@.service": ["/etc/pipemesh/pipemesh.env", "-/etc/pipemesh/partition-%i.env"],
        "pipemesh-coordinator.service": ["/etc/pipemesh/pipemesh.env", "/etc/pipemesh/coordinator.env"],
    }


def environment_defaults(name: str) -> dict[str, str]:
    pairs = [value.split("=", 1) for value in values_of(unit(name)["Service"], "Environment")]
    return {key: value for key, value in pairs}


def test_ps_keeps_checkpoints_in_its_own_state_directory() -> None:
    service = unit("pipemesh-ps@.service")["Service"]
    assert value_of(service, "StateDirectory") == "pipemesh/ps-%i"
    # %S is /var/lib for system units: the checkpoint directory is the
    # state directory, the one place ProtectSystem=strict lets the task write.
    assert environment_defaults("pipemesh-ps@.service")["PIPEMESH_CHECKPOINT_DIR"] == "%S/pipemesh/ps-%i"


def test_coordinator_has_a_state_directory_and_finds_the_bundled_datasets() -> None:
    service = unit("pipemesh-coordinator.service")["Service"]
    assert value_of(service, "StateDirectory") == "pipemesh/coordinator"
    # Where scripts/install-systemd puts datasets/ (checked by test_install_systemd).
    assert environment_defaults("pipemesh-coordinator.service")["PIPEMESH_DATASETS"] == \
        "/usr/local/share/pipemesh/datasets"


def test_templates_use_their_instance() -> None:
    for name in ("pipemesh-ps@.service", "pipemesh-partition@.service"):
        text = (SYSTEMD / name).read_text()
        sections = parse_unit(text)
        assert "%i" in value_of(sections["Unit"], "Description"), name
        assert any("%i" in value for value in values_of(sections["Service"], "EnvironmentFile")), name
    assert "%i" not in (SYSTEMD / "pipemesh-coordinator.service").read_text()


@pytest.mark.parametrize("name", SERVICES)
def test_unit_defaults_listen_on_every_address(name: str) -> None:
    listen = environment_defaults(name)["PIPEMESH_LISTEN"]
    assert re.fullmatch(r"0\.0\.0\.0:\d+", listen), listen
    known = COMMON_OPTIONS | ROLE_OPTIONS[ROLES[name]] | ENVIRONMENT_ONLY
    assert set(environment_defaults(name)) <= {f"PIPEMESH_{option}" for option in known}


def test_partition_advertises_the_port_it_listens_on() -> None:
    defaults = environment_defaults("pipemesh-partition@.service")
    port = defaults["PIPEMESH_LISTEN"].rsplit(":", 1)[1]
    assert defaults["PIPEMESH_ADVERTISE"] == f"%H:{port}"
    active, _ = parse_environment((SYSTEMD / "env" / "partition-0-0.env").read_text())
    assert active["PIPEMESH_ADVERTISE"].rsplit(":", 1)[1] == active["PIPEMESH_LISTEN"].rsplit(":", 1)[1]


ENVIRONMENT_FILES = {
    "pipemesh.env": COMMON_OPTIONS - {"LISTEN"},
    "ps-0.env": COMMON_OPTIONS | ROLE_OPTIONS["ps"],
    "partition-0-0.env": COMMON_OPTIONS | ROLE_OPTIONS["partition"],
    "coordinator.env": COMMON_OPTIONS | ROLE_OPTIONS["coordinator"],
}


@pytest.mark.parametrize("name", list(ENVIRONMENT_FILES))
def test_environment_file_sets_only_real_options(name: str) -> None:
    active, commented = parse_environment((SYSTEMD / "env" / name).read_text())
    allowed = {f"PIPEMESH_{option}" for option in ENVIRONMENT_FILES[name]}
    assert set(active) | commented <= allowed, sorted((set(active) | commented) - allowed)
    assert active or commented


def test_environment_files_give_a_working_single_host_mesh() -> None:
    def active(name: str) -> dict[str, str]:
        return parse_environment((SYSTEMD / "env" / name).read_text())[0]

    ps, partition, coordinator = active("ps-0.env"), active("partition-0-0.env"), active("coordinator.env")
    port = lambda address: address.rsplit(":", 1)[1]  # noqa: E731
    assert coordinator["PIPEMESH_PS"] == f"127.0.0.1:{port(ps['PIPEMESH_LISTEN'])}"
    assert coordinator["PIPEMESH_PARTITIONS"] == f"127.0.0.1:{port(partition['PIPEMESH_LISTEN'])}"
    ports = {port(ps["PIPEMESH_LISTEN"]), port(partition["PIPEMESH_LISTEN"]), port(coordinator["PIPEMESH_LISTEN"])}
    assert len(ports) == 3
    assert "PIPEMESH_LISTEN" not in active("pipemesh.env")

"""scripts/install-systemd --root: puts the binary, units, sysusers file and
example environment files in place, never replaces an environment file that
exists, and refuses bad arguments."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from conftest import INSTALL_SYSTEMD, REPOSITORY, SYSTEMD, UNITS, install_into, run, write_stand_in_binary

ENVIRONMENT_FILES = ["pipemesh.env", "coordinator.env", "ps-0.env", "partition-0-0.env"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_installs_every_file(tmp_path: Path, stand_in_binary: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = install_into(root, stand_in_binary)
    assert result.returncode == 0, result.stderr

    binary = root / "usr/local/bin/pipemesh"
    assert binary.read_bytes() == stand_in_binary.read_bytes()
    assert mode(binary) == 0o755
    for name in UNITS:
        installed = root / "etc/systemd/system" / name
        assert installed.read_text() == (SYSTEMD / name).read_text(), name
        assert mode(installed) == 0o644, name
    assert (root / "usr/lib/sysusers.d/pipemesh.conf").read_text() == (SYSTEMD / "pipemesh.sysusers").read_text()
    assert mode(root / "etc/pipemesh") == 0o750
    for name in ENVIRONMENT_FILES:
        installed = root / "etc/pipemesh" / name
        assert installed.read_text() == (SYSTEMD / "env" / name).read_text(), name
        assert mode(installed) == 0o640, name
    if (REPOSITORY / "docs/operations.md").exists():
        assert (root / "usr/local/share/doc/pipemesh/operations.md").exists()
    # The bundled datasets, where the coordinator's unit tells it to look.
    datasets = root / "usr/local/share/pipemesh/datasets"
    assert (datasets / "digits/digits.csv").read_bytes() == (REPOSITORY / "datasets/digits/digits.csv").read_bytes()
    assert mode(datasets / "digits/digits.csv") == 0o644
    unit_text = (root / "etc/systemd/system/pipemesh-coordinator.service").read_text()
    assert "Environment=PIPEMESH_DATASETS=/usr/local/share/pipemesh/datasets" in unit_text
    # Nothing outside the root: no user created, systemd not reloaded.
    assert "systemd not reloaded" in result.stdout
    leftovers = [path for path in root.rglob(".*install-*")]
    assert not leftovers, leftovers


def test_keeps_existing_environment_files_and_updates_units(tmp_path: Path, stand_in_binary: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/pipemesh").mkdir(parents=True)
    edited = "PIPEMESH_LISTEN=0.0.0.0:7101\n"
    (root / "etc/pipemesh/ps-0.env").write_text(edited)
    result = install_into(root, stand_in_binary)
    assert result.returncode == 0, result.stderr
    assert (root / "etc/pipemesh/ps-0.env").read_text() == edited
    assert "kept" in result.stdout and "ps-0.env" in result.stdout
    assert (root / "etc/pipemesh/coordinator.env").read_text() == (SYSTEMD / "env/coordinator.env").read_text()

    # A second install (an upgrade) replaces units and binary, keeps every
    # environment file as the operator left it.
    (root / "etc/pipemesh/coordinator.env").write_text("PIPEMESH_PS=10.0.0.1:7100\n")
    (root / "etc/systemd/system/pipemesh-ps@.service").write_text("stale\n")
    newer = write_stand_in_binary(tmp_path / "pipemesh-newer")
    newer.write_text(newer.read_text() + "# newer\n")
    result = install_into(root, newer)
    assert result.returncode == 0, result.stderr
    assert (root / "etc/pipemesh/ps-0.env").read_text() == edited
    assert (root / "etc/pipemesh/coordinator.env").read_text() == "PIPEMESH_PS=10.0.0.1:7100\n"
    assert (root / "etc/systemd/system/pipemesh-ps@.service").read_text() == (SYSTEMD / "pipemesh-ps@.service").read_text()
    assert (root / "usr/local/bin/pipemesh").read_text().endswith("# newer\n")


def test_binary_as_positional_argument(tmp_path: Path, stand_in_binary: Path) -> None:
    result = run(INSTALL_SYSTEMD, "--root", tmp_path, "--no-tls", stand_in_binary)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "usr/local/bin/pipemesh").read_bytes() == stand_in_binary.read_bytes()


def test_refuses_a_missing_or_non_executable_binary(tmp_path: Path) -> None:
    missing = run(INSTALL_SYSTEMD, "--root", tmp_path, "--binary", tmp_path / "nope")
    assert missing.returncode != 0 and "not an executable" in missing.stderr
    plain = tmp_path / "plain"
    plain.write_text("not executable")
    refused = run(INSTALL_SYSTEMD, "--root", tmp_path, "--binary", plain)
    assert refused.returncode != 0 and "not an executable" in refused.stderr
    assert not (tmp_path / "usr").exists() and not (tmp_path / "etc").exists()


def test_refuses_unknown_options_and_a_missing_root(tmp_path: Path, stand_in_binary: Path) -> None:
    unknown = run(INSTALL_SYSTEMD, "--root", tmp_path, "--binary", stand_in_binary, "--frobnicate")
    assert unknown.returncode == 2 and "unknown option --frobnicate" in unknown.stderr
    absent = run(INSTALL_SYSTEMD, "--root", tmp_path / "absent", "--binary", stand_in_binary)
    assert absent.returncode != 0 and "not a directory" in absent.stderr


def test_help_describes_usage() -> None:
    result = run(INSTALL_SYSTEMD, "--help")
    assert result.returncode == 0
    assert "--root DIR" in result.stderr and "--binary PATH" in result.stderr


def test_installing_into_the_real_root_needs_root(stand_in_binary: Path) -> None:
    """Without --root the script writes to / and so must refuse an ordinary
    user before touching anything. As root, the test drops to nobody."""
    command: list[str | Path] = [INSTALL_SYSTEMD, "--binary", stand_in_binary]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to run the script as an ordinary user"
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = run(*command)
    assert result.returncode == 1 and "needs root" in result.stderr, result.stderr


def test_makes_certificates_for_every_role(tmp_path: Path) -> None:
    """With the real binary (built before these tests run), the install
    makes a CA and a certificate per role that the environment files name,
    readable by the pipemesh group only; a second install keeps them."""
    binary = REPOSITORY / ".build/debug/pipemesh"
    if not binary.exists():
        pytest.fail(f"{binary} is not built: scripts/test builds it before the deployment tests")
    root = tmp_path / "root"
    root.mkdir()
    result = install_into(root, binary, "--tls-hosts", "localhost,127.0.0.1,node-a")
    assert result.returncode == 0, result.stderr
    tls = root / "etc/pipemesh/tls"
    assert mode(tls) == 0o750
    assert mode(tls / "ca.key") == 0o600, "the CA key is for root only"
    for role in ["coordinator", "partition", "ps"]:
        assert mode(tls / f"{role}.key") == 0o640, role
        verified = run("openssl", "verify", "-CAfile", tls / "ca.crt", tls / f"{role}.crt")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        subject = run("openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName", "-in", tls / f"{role}.crt").stdout
        assert f"CN = {role}" in subject and "DNS:node-a" in subject and "IP Address:127.0.0.1" in subject, subject
    # Every role's environment file names its own certificate, and the CA is shared.
    shared = (root / "etc/pipemesh/pipemesh.env").read_text()
    assert "\nPIPEMESH_TLS_CA=/etc/pipemesh/tls/ca.crt\n" in shared
    for file, role in [("coordinator.env", "coordinator"), ("ps-0.env", "ps"), ("partition-0-0.env", "partition")]:
        text = (root / "etc/pipemesh" / file).read_text()
        assert f"\nPIPEMESH_TLS_CERT=/etc/pipemesh/tls/{role}.crt\n" in text, file
        assert f"\nPIPEMESH_TLS_KEY=/etc/pipemesh/tls/{role}.key\n" in text, file
    ca = (tls / "ca.crt").read_bytes()
    again = install_into(root, binary, "--tls-hosts", "localhost")
    assert again.returncode == 0, again.stderr
    assert "kept the certificates" in again.stdout
    assert (tls / "ca.crt").read_bytes() == ca

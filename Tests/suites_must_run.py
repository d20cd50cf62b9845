"""A pytest plugin for CI: with CI=true a skipped test fails the run.

A suite that skips on the CI machine (helm-python-sdk or systemd-analyze
missing, say) proves nothing there; the test command loads this plugin
(`-p suites_must_run`) so that such a run is red, naming what was skipped and
why, instead of green.
"""

import os

import pytest


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if _in_ci() and skipped and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    skipped = terminalreporter.stats.get("skipped", [])
    if _in_ci() and skipped:
        terminalreporter.write_sep("=", "CI=true: every suite must run; these skipped", red=True)
        for report in skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            terminalreporter.write_line(f"{report.nodeid}: {reason}")

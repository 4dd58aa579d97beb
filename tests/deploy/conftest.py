"""The in-process CLI runner of tests/cli, for the deploy commands' CLI tests."""

from tests.cli.conftest import cli as cli  # noqa: F401 (a fixture re-exported)

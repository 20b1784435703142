"""Outcome lines a suite prints in the terminal summary, also under pytest-xdist.

A test writes its line into its suite's :class:`Board` (a dict living in the
worker process that ran it). The suite's conftest moves the lines onto that
test's teardown report as user properties, which pytest-xdist ships to the
controller; the summary reads them back from every report, so the figures are
whole whichever worker ran which test.
"""

from __future__ import annotations

from typing import Any

_PREFIX = "nubes-summary:"


class Board(dict[str, str]):
    """Lines of one suite: what was tried -> how it ended."""

    def __init__(self, suite: str) -> None:
        super().__init__()
        self.key = _PREFIX + suite

    def attach(self, report: Any) -> None:
        """Move the lines written so far onto ``report`` (a teardown report)."""
        if report.when == "teardown" and self:
            report.user_properties.extend((self.key, [k, v]) for k, v in self.items())
            self.clear()


def summarise(terminalreporter: Any) -> None:
    """Print every suite's lines, gathered from the reports of all workers.

    Called from the root conftest: the controller of a pytest-xdist run never
    imports the suites' own conftests, so a summary hook there would not run.
    """
    suites: dict[str, dict[str, str]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if isinstance(name, str) and name.startswith(_PREFIX):
                    suites.setdefault(name[len(_PREFIX) :], {})[value[0]] = value[1]
    for suite, lines in sorted(suites.items()):
        terminalreporter.write_sep("-", f"{suite} suite")
        for what, outcome in lines.items():
            terminalreporter.write_line(f"{what}: {outcome}")
        if suite == "crash":
            ok = sum(1 for outcome in lines.values() if outcome == "consistent")
            terminalreporter.write_line(f"{len(lines)} kill points tried, {ok} ended consistent")

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

    def collected(self, terminalreporter: Any) -> dict[str, str]:
        """Every line of this suite, from the reports of all workers."""
        lines: dict[str, str] = {}
        for reports in terminalreporter.stats.values():
            for report in reports:
                for name, value in getattr(report, "user_properties", ()):
                    if name == self.key:
                        lines[value[0]] = value[1]
        return lines

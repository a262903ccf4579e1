"""Tests for presence.logobservers, the observers for twistd --logger."""

from __future__ import annotations

import io
import json
import sys

from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from presence import logobservers


class ObserverTests(SynchronousTestCase):
    """The observers write what they promise."""

    def setUp(self) -> None:
        """Capture standard output."""
        self.out = io.StringIO()
        self.patch(sys, "stdout", self.out)

    def event(self, level: LogLevel) -> dict[str, object]:
        """A log event with a field."""
        return {
            "log_level": level,
            "log_format": "hello {who}",
            "who": "world",
            "log_namespace": "test",
            "log_time": 0.0,
        }

    def test_json(self) -> None:
        """The JSON observer writes each event as JSON, fields kept."""
        logobservers.jsonObserver()(self.event(LogLevel.info))
        text = self.out.getvalue().strip("\x1e\n")
        self.assertEqual(json.loads(text)["who"], "world")

    def test_infoFiltersDebug(self) -> None:
        """The info observer drops debug events and writes info ones."""
        observer = logobservers.infoObserver()
        observer(self.event(LogLevel.debug))
        self.assertEqual(self.out.getvalue(), "")
        observer(self.event(LogLevel.info))
        self.assertIn(formatEvent(self.event(LogLevel.info)), self.out.getvalue())

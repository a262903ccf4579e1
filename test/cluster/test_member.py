"""The cluster member's pieces that need no database: ids, channels, signals."""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from presence.cluster.member import (
    MAX_SERVER_ID,
    channelOf,
    defaultServerId,
    parsePayload,
    presentityPayload,
    subscriptionPayload,
)
from presence.config import Config, ConfigError, loadFile
from presence.stack import serverIdOf


class ServerIdTests(SynchronousTestCase):
    """``server_id``, and the default made of the host name and the port."""

    def test_default(self) -> None:
        """The host name's first label and the first listening port."""
        self.assertEqual(defaultServerId("pres1.example.com", 5060), "pres1:5060")

    def test_portZeroIsUnique(self) -> None:
        """On an ephemeral port there is no stable address: a unique suffix."""
        self.assertEqual(defaultServerId("pres1", 0, "abcd"), "pres1:0.abcd")

    def test_longNamesFitTheColumn(self) -> None:
        """OpenSIPS's sharing_tag is VARCHAR(32): long names are shortened."""
        long = defaultServerId("a" * 60, 5060)
        self.assertLessEqual(len(long), MAX_SERVER_ID)
        self.assertNotEqual(long, defaultServerId("a" * 59 + "b", 5060))

    def test_configured(self) -> None:
        """``server_id`` wins over the default."""
        self.assertEqual(serverIdOf(Config(serverId="east-1")), "east-1")

    def test_defaultFromListen(self) -> None:
        """The default takes the first listen address's port."""
        self.assertTrue(serverIdOf(Config(listen=("udp:5070",))).endswith(":5070"))

    def test_settingsChecked(self) -> None:
        """A server id must fit the column; the timeouts must make sense."""
        for bad in (
            Config(serverId=""),
            Config(serverId="x" * 33),
            Config(serverId="a b"),
            Config(nodeTimeout=0),
            Config(dbStatementTimeout=-1),
        ):
            self.assertRaises(ConfigError, bad.validate)

    def test_toml(self) -> None:
        """The settings' TOML names."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "presence.toml")
        with open(path, "w") as f:
            f.write(
                'server_id = "east-1"\nnode_timeout = 4\ndb_statement_timeout = 0.5\n'
            )
        config = loadFile(path)
        self.assertEqual(
            (config.serverId, config.nodeTimeout, config.dbStatementTimeout),
            ("east-1", 4.0, 0.5),
        )


class SignalTests(SynchronousTestCase):
    """The payloads of the signals, and the channels."""

    def test_roundTrip(self) -> None:
        """A presentity and event, or a subscription key, come back as sent."""
        self.assertEqual(
            parsePayload(presentityPayload("sip:bob@example.com", "presence")),
            ("sip:bob@example.com", "presence"),
        )
        key = ("c@h", "to", "from", "presence", "")
        self.assertEqual(parsePayload(subscriptionPayload(key)), key)

    def test_badPayloadsIgnored(self) -> None:
        """Bad input never crashes the server: a malformed signal is None."""
        for payload in ("", "{", "[]", '["p", 1, 2]', '["s", "a"]', '{"p": 1}', "null"):
            self.assertIsNone(parsePayload(payload))

    def test_channels(self) -> None:
        """A channel is a plain identifier whatever the id, distinct per id."""
        self.assertRegex(channelOf('we"ird id;'), r"^[a-z0-9_]+$")
        self.assertNotEqual(channelOf("a"), channelOf("b"))
        self.assertLess(len(channelOf("x" * 32)), 64)

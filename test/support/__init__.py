"""Helpers of the tests that need more than `presence.testing`.

A PostgreSQL server to test against (`test.support.postgres`), a TCP proxy
that cuts connections (`test.support.proxy`), and the server and user agents
on real loopback sockets of the end-to-end tests (`test.support.sockets`).
"""

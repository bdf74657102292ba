"""Fixtures of the core tests: a database shared by real server processes."""

from tests.plugins.test_instances import shared_database

__all__ = ["shared_database"]

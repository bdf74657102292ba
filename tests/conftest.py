"""Shared test configuration: fixture plugins used across the test tree."""

pytest_plugins = ["tests.s3server"]

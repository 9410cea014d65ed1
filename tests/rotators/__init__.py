"""Test-only rotators against real targets, registered for worker processes by fake entry points.

See ``tests/fixtures/plugins.py`` for the fixture that makes them discoverable through
``importlib.metadata`` in a child process (a ``*.dist-info`` directory on ``PYTHONPATH``).
"""

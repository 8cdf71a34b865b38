"""The emulator's own tests.

A package, so that this folder's ``conftest`` is imported as ``emulator.conftest``: as a second
top-level ``conftest`` it would replace ``tests/conftest.py`` in ``sys.modules``. The shared
helpers are imported as everywhere else, ``from support import ...``.
"""

"""The emulator's own tests.

A package, so that this folder's ``conftest`` is imported as ``emulator.conftest``: as a second
top-level ``conftest`` it would replace ``tests/conftest.py`` in ``sys.modules``, and the
other tests' ``from conftest import TOKEN`` would then find this one.
"""

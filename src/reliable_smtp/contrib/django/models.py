"""No Django models: the outbox tables belong to the outbox's own schema code.

This module exists so that Django sends this app ``post_migrate`` (only apps with
a models module get it), which creates the tables; see ``apps.py``.
"""

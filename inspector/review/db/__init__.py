"""The workbench's database: ``store.py`` (every query), ``schema.py`` (its migrations, SQLite
and PostgreSQL) and ``index.py`` (the recorders' folders read into it).

Imports nothing of the workbench but its ``files``.
"""

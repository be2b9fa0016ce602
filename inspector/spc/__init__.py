"""Quality over time: SPC charts, store, ingest, alarms and reports on the verdict stream.

May import only ``inspector.contract``, ``inspector.errors``, ``inspector.logs``, ``inspector.httpd``.
"""

"""The ``tiler`` command line: one module per subcommand, shared options in ``options``; archives of
inputs (``--manifest``, ``--out-dir``, the report) in ``batch``, a command-line concern.

May import: anything in tiler; ``exporters`` only from ``export`` (the ``tiler export`` command).
"""

"""The ``tiler`` command line: one module per subcommand, shared options in ``options``."""

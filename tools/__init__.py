"""Development tools: the demo slide, its synthetic texture and the training of the built-in model.

Never imported by ``tiler`` itself (checked by ``tests/test_import_graph.py``); run from the
repository root: ``python -m tools.demo``, ``python -m tools.train``.
"""

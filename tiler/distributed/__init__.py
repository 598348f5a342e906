"""The same blocks as tasks on a dask cluster.

Owns :func:`~tiler.distributed.tasks.run_blocks` and :func:`~tiler.distributed.tasks.predict_dask`
(:mod:`~tiler.distributed.tasks`), what a worker reopens and caches (:mod:`~tiler.distributed.worker`)
and starting or joining a cluster (:mod:`~tiler.distributed.cluster`).

May import: errors, malloc, cores, sources, plan, masks, runners, config, store, engine.
"""

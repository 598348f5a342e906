"""The pipeline of one block: load -> run -> stitch -> convert -> write, overlapped on threads.

Owns :class:`~tiler.engine.job.Job` (one output's work), :func:`~tiler.engine.pipeline.run_block`
(the work unit every process and dask task runs), the tile loader (:mod:`~tiler.engine.load`),
the stitcher (:mod:`~tiler.engine.stitch`), output kinds and conversion (:mod:`~tiler.engine.outputs`),
background threads (:mod:`~tiler.engine.threads`), recycled buffers (:mod:`~tiler.engine.buffers`) and
exact tiling (:mod:`~tiler.engine.exact`: the model's context radius, the settings under which tiles
equal one whole-image pass, the residual measured).

May import: errors, cores, sources, plan, masks (the skip table), models (the spec), runners, config, store (the sink
interface).
"""

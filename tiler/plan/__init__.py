"""Where tiles go and what weight their pixels get. Pure arithmetic, no I/O.

Owns the tile lattice (:mod:`~tiler.plan.lattice`: :class:`~tiler.plan.lattice.TilePlan`,
:func:`~tiler.plan.lattice.reflect_index`), the partition of the output into work units
(:mod:`~tiler.plan.partition`: :class:`~tiler.plan.partition.Block`,
:class:`~tiler.plan.partition.Partition`) and the blending windows (:mod:`~tiler.plan.windows`).

May import: errors.
"""

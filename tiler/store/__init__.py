"""What is written to disk and how it is kept safe.

Owns the zarr v3 output group and its format version (:mod:`~tiler.store.sink`: ``ZarrSink``,
``MemorySink``, fsync and the flusher thread), who may write it (:mod:`~tiler.store.ownership`:
the owner record and lock), where the output lives (:mod:`~tiler.store.location`: a local path or
an S3 or GCS URL, its zarr store, the owner record there with conditional writes), input digests
(:mod:`~tiler.store.identity`), the run record compared on resume (:mod:`~tiler.store.resume`)
and the OME-Zarr pyramid (:mod:`~tiler.store.pyramid`).

May import: errors, version, cores, sources (what the run record says about the input; the URL helpers).
"""

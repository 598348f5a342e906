"""Models themselves: the built-in UNet (:mod:`~tiler.models.unet`), checkpoint layouts
(:mod:`~tiler.models.checkpoints`), reading model files (:mod:`~tiler.models.files`: checkpoints,
TorchScript, the default weights in ``weights/``) and the metadata that travels with a model
(:mod:`~tiler.models.spec`: :class:`~tiler.models.spec.ModelSpec`, its input normalisation).

May import: errors. Never the runners (they are built from models, in :mod:`tiler.runners.factory`).
"""

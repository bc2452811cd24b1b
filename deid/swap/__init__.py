"""Per-patient face swap (Zhu et al., AIES 2020): see docs/swap.md.

Modules (imported on use; importing :mod:`deid.swap` itself loads nothing heavy):

- :mod:`~deid.swap.donors`   donor library and consent records (``deid donor ...``)
- :mod:`~deid.swap.align`    landmarks -> similarity transform -> crops, and back; smoothing
- :mod:`~deid.swap.faceset`  aligned face sets with their transforms, quality filtering
- :mod:`~deid.swap.spec`, :mod:`~deid.swap.model`  presets and the shared-encoder /
  per-identity-decoder network (torch, no torchvision)
- :mod:`~deid.swap.augment`, :mod:`~deid.swap.losses`, :mod:`~deid.swap.train`
  training batches, SSIM + L1, the one training loop (``fit``) Ray Train wraps
- :mod:`~deid.swap.pretrain` the donor-only model every patient's training starts from
- :mod:`~deid.swap.convert`  generate, colour-match, blend
- :mod:`~deid.swap.gate`     identity gate (is the swapped face still the patient?)
- :mod:`~deid.swap.session`  train -> convert -> delete, in a private directory
- :mod:`~deid.swap.cli`      ``deid swap train``, ``deid donor add|list|check|pretrain``
- :mod:`~deid.swap.bench`    ``python -m deid.swap.bench``: training time and conversion fps
- :mod:`~deid.swap.testing`  test doubles for synthetic clips

The anonymizer the pipeline calls is :class:`deid.anonymize.swap.SwapAnonymizer`.
"""

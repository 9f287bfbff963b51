"""Training the network: synthetic scans, the (raw, reprojection) pairs taken through steps A and B, training.

:mod:`~dejitter.training.synthesis` phantoms, jitter and detector effects (also the demo scans);
:mod:`~dejitter.training.ellipsoids` analytic phantoms, projected exactly at any detector size;
:mod:`~dejitter.training.data` the training conditions and pairs; :mod:`~dejitter.training.train`
the dataset, training loop and ``dejitter-train`` command.
"""

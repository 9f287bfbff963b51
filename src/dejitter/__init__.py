"""dejitter: take the stage jitter out of nano-tomography scans.

Steps (Fu et al., J. Synchrotron Rad. 28, 2021), each in one place:

A. MLEM at reduced resolution ............ :func:`dejitter.reconstruction.mlem`
B. reprojection .......................... :func:`dejitter.reconstruction.reproject`
C. jitter estimation (network or classic)  :func:`dejitter.registration.estimate_shifts`
D. sub-pixel shift-back .................. :func:`dejitter.shifting.correct`
E. final reconstruction (FBP) ............ :func:`dejitter.reconstruction.fbp`

The package is grouped by stage; each group imports only the groups above it in this list:

``types``, ``shifting``, ``metrics``, ``files``   shared types, the one shift convention, the one metric, our files
``readers``                                      raw scans from every format (:func:`dejitter.readers.read_scan`)
``binning``, ``preprocessing``                   binning for steps A-C; flat/dark, line integrals, repair
``reconstruction``                               projector pair, MLEM, reprojection, FBP, backends
``registration``                                 step C: references, classic methods, network, the default
``training``                                     synthetic data and training of the network
``reports``                                      QC figures and summary metrics
``pipeline``                                     the per-scan file-to-file steps the workflow calls
"""

import warnings

__version__ = "0.1.0"

# torch marks sparse CSR tensors as beta on every construction; we rely on them on purpose.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

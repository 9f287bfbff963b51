"""dejitter: take the stage jitter out of nano-tomography scans.

Steps (Fu et al., J. Synchrotron Rad. 28, 2021), one module each:

A. MLEM at reduced resolution ............ :func:`dejitter.reconstruction.mlem`
B. reprojection .......................... :func:`dejitter.reconstruction.reproject`
C. jitter estimation (network or classic)  :func:`dejitter.registration.estimate_shifts`
D. sub-pixel shift-back .................. :func:`dejitter.shifting.correct`
E. final reconstruction (FBP) ............ :func:`dejitter.reconstruction.fbp`

The per-scan file-to-file steps that the Snakemake workflow calls are in
:mod:`dejitter.pipeline`.
"""

import warnings

__version__ = "0.1.0"

# torch marks sparse CSR tensors as beta on every construction; we rely on them on purpose.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

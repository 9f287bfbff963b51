"""The per-scan file-to-file steps that the workflow's rules call, and what they need to run at scale.

:mod:`~dejitter.pipeline.steps` the steps on full-resolution data (preprocess, shift-back, reconstruction);
:mod:`~dejitter.pipeline.alignment` steps A-C on the binned projections; :mod:`~dejitter.pipeline.common` the
backend a step runs on;
:mod:`~dejitter.pipeline.memory` chunk sizes within a memory budget and out-of-memory errors said
plainly; :mod:`~dejitter.pipeline.sizing` the resources a rule asks for, from the scan's shape;
:mod:`~dejitter.pipeline.steplog` one log per step.
"""

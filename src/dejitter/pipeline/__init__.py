"""The per-scan file-to-file steps that the workflow's rules call, and what they need to run at scale.

:mod:`~dejitter.pipeline.steps` the steps (preprocess, steps A-C, shift-back, reconstruction);
:mod:`~dejitter.pipeline.memory` chunk sizes within a memory budget and out-of-memory errors said
plainly; :mod:`~dejitter.pipeline.sizing` the resources a rule asks for, from the scan's shape;
:mod:`~dejitter.pipeline.steplog` one log per step.
"""

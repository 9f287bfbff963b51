"""Adapter: the corrected volume as an ImageJ TIFF stack for Fiji, voxel size carried through."""

from dejitter.files import read_volume, write_volume_tiff
from dejitter.pipeline.steplog import logged_step

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan=sm.wildcards.scan, step="volume_tiff", threads=sm.threads):
    volume, attrs = read_volume(sm.input.volume)
    write_volume_tiff(sm.output.tiff, volume, voxel_size_um=attrs.get("voxel_size_um"))

"""Beamline scale (issue 11, parts 4-6): binning from the detector size, intermediates sized for
campaigns (binned QC reconstruction, float16 or cropped volumes), resources that follow the scan,
and a step that runs out of memory failing clearly, leaving nothing, so that a retry with smaller
chunks can follow."""

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from snakemake.utils import validate

from dejitter.files import read_stack, read_volume, write_stack
from dejitter.pipeline import alignment, common, memory, sizing
from dejitter.pipeline import steps as pipeline
from dejitter.binning import auto_binning, bin_projections, binning_factor, row_binning
from dejitter.readers import write_dxchange
from dejitter.reconstruction import fbp
from dejitter.reconstruction import reproject as fbp_reprojection
from dejitter.shifting import displace

ROOT = Path(__file__).resolve().parents[1]


# -- part 4: binning from the detector size ---------------------------------------------------------------------

@pytest.mark.parametrize("n_cols, factor", [(32, 1), (100, 1), (127, 1), (128, 2), (512, 2), (513, 3), (1024, 4),
                                            (2048, 8), (2560, 10)])
def test_auto_binning_aims_at_a_few_hundred_pixels(n_cols, factor):
    assert auto_binning(n_cols) == factor
    assert n_cols // factor <= 256
    if factor > 1:
        assert n_cols // factor >= 64  # the network's input keeps every binned pixel it can


def test_binning_factor_takes_integers_and_auto():
    assert binning_factor("auto", 1024) == 4 and binning_factor("AUTO", 128) == 2
    assert binning_factor(3, 1024) == 3 and binning_factor(np.int64(2), 10) == 2 and binning_factor("4", 10) == 4
    for bad in (0, -2, 2.5, "two", True, None):
        with pytest.raises(ValueError, match="positive integer or 'auto'"):
            binning_factor(bad, 128)


@pytest.mark.parametrize("width, factor", [(48, 1), (128, 2)])
def test_preprocess_chooses_and_records_the_binning(tmp_path, width, factor):
    rng = np.random.default_rng(0)
    data = rng.uniform(100, 1000, (7, 6, width)).astype(np.float32)
    write_dxchange(tmp_path / "raw.h5", data, np.linspace(0, 180, 7), flats=np.full((2, 6, width), 1100.0),
                   darks=np.zeros((2, 6, width)))
    pipeline.preprocess(tmp_path / "raw.h5", tmp_path / "p.h5", tmp_path / "b.h5", binning="auto")
    binned, attrs, _ = read_stack(tmp_path / "b.h5")
    assert binned.shape == (7, 6 // factor, width // factor)
    assert json.loads(attrs["scale"]) == [factor, factor]


def test_short_detectors_keep_their_rows_chunked_or_whole(tmp_path):
    # 512 columns x 128 rows: binning 4 for the columns would leave 32 rows, too few for dy; rows are
    # binned by 2 (64 rows), and a chunk of rows is binned as the detector is (no rows left empty).
    assert row_binning(4, 128) == 2 and row_binning(8, 256) == 4 and row_binning(2, 128) == 2
    assert row_binning(4, 32) == 4 and row_binning(4, 2) == 2 and row_binning(8, 96) == 1
    rng = np.random.default_rng(1)
    data = rng.uniform(100, 1000, (3, 128, 512)).astype(np.float32)
    write_dxchange(tmp_path / "raw.h5", data, np.linspace(0, 180, 3), flats=np.full((2, 128, 512), 1100.0),
                   darks=np.zeros((2, 128, 512)))
    results = []
    for budget in (4000, 2):  # whole, and one angle at a time
        pipeline.preprocess(tmp_path / "raw.h5", tmp_path / f"p{budget}.h5", tmp_path / f"b{budget}.h5", binning=4,
                            memory_budget_mb=budget)
        binned, attrs, _ = read_stack(tmp_path / f"b{budget}.h5")
        assert binned.shape == (3, 64, 128) and json.loads(attrs["scale"]) == [4, 2]
        assert np.all(binned > 0)  # every binned row written
        results.append(binned)
    np.testing.assert_array_equal(*results)
    assert sizing.binned_shape((3, 128, 512), 4) == (3, 64, 128)


def test_steps_a_and_b_make_autos_references_at_its_search_resolution(tmp_path):
    """A 200 px wide binned scan: ``auto`` searches at 100 px, so steps A and B reconstruct and
    reproject there (a quarter of the work of a 200 px MLEM per slice, half the slices); the
    other methods read them at 200 px; step C refuses references made for another grid."""
    theta = np.deg2rad(np.linspace(0, 180, 31))
    volume = np.zeros((4, 200, 200), np.float32)
    volume[:, 60:140, 70:130] = 1.0
    write_stack(tmp_path / "b.h5", fbp_reprojection(volume, theta), attrs={"scale": [1, 1]},
                extra={"theta_deg": np.rad2deg(theta)})
    shapes = {}
    for method in ("auto", "phase_correlation"):
        options = dict(backend="torch", device="cpu")
        alignment.reconstruct_reference(tmp_path / "b.h5", tmp_path / f"{method}_mlem.h5", leave_out=True,
                                        mlem_iter=2, method=method, **options)
        alignment.reproject_reference(tmp_path / "b.h5", tmp_path / f"{method}_mlem.h5", tmp_path / f"{method}_ref.h5",
                                      **options)
        volumes, attrs, _ = read_stack(tmp_path / f"{method}_mlem.h5")
        references, ref_attrs, _ = read_stack(tmp_path / f"{method}_ref.h5")
        shapes[method] = volumes.shape, references.shape, json.loads(ref_attrs["reference_binning"])
    assert shapes["auto"] == ((2, 2, 100, 100), (31, 2, 100), [2, 2])
    assert shapes["phase_correlation"] == ((2, 4, 200, 200), (31, 4, 200), [1, 1])
    with pytest.raises(ValueError, match=r"binned \(2, 2\).*reads them binned \(1, 1\): rerun steps A and B"):
        alignment.register(tmp_path / "b.h5", tmp_path / "shifts.csv", method="phase_correlation",
                           references_path=tmp_path / "auto_ref.h5", backend="torch", device="cpu")
    assert not list(tmp_path.glob("*shifts.csv*"))


def test_a_wide_detector_goes_from_step_c_to_a_volume(tmp_path):
    """Where ``auto`` searches binned (steps A-C's width above 192 px: every 1024-2048 px detector at
    the default binning), its provenance holds values that do not apply (``None``: no high-pass in
    the refinement at the given resolution), and step E writes it into the volume's attributes.
    HDF5 has no null: that once failed step E on every such scan, after all the work of steps A-D.
    Here the functions the rules of steps C and E call, on a 200 px wide jittered scan."""
    rng = np.random.default_rng(5)
    theta = np.deg2rad(np.linspace(0, 180, 31))
    volume = np.zeros((4, 200, 200), np.float32)
    volume[:, 60:140, 70:130] = 1.0
    volume[:, 90:100, 80:90] = 3.0
    jitter = np.column_stack([rng.uniform(-3, 3, len(theta)), np.zeros(len(theta))])
    write_stack(tmp_path / "b.h5", displace(fbp_reprojection(volume, theta), jitter), attrs={"scale": [1, 1]},
                extra={"theta_deg": np.rad2deg(theta)})
    options = dict(backend="torch", device="cpu")
    alignment.reconstruct_reference(tmp_path / "b.h5", tmp_path / "mlem.h5", leave_out=False, mlem_iter=2, method="auto",
                                    **options)
    alignment.reproject_reference(tmp_path / "b.h5", tmp_path / "mlem.h5", tmp_path / "ref.h5", **options)
    provenance = alignment.register(tmp_path / "b.h5", tmp_path / "shifts.csv", references_path=tmp_path / "ref.h5",
                                    method="auto", model_path=ROOT / "resources" / "models" / "dejitter_resnet.pt",
                                    network_passes=1, mlem_iter=4, **options)
    assert provenance["search_binning"] == 2
    not_applicable = [key for key, value in provenance.items() if value is None]
    assert "fine_refinement_highpass_sigma_px" in not_applicable
    # As workflow/scripts/reconstruct.py passes it: registration.json, read back.
    provenance = json.loads(json.dumps(provenance))
    pipeline.reconstruct(tmp_path / "b.h5", tmp_path / "volume.h5", find_axis=False, provenance=provenance,
                         **options)
    corrected, attrs = read_volume(tmp_path / "volume.h5")
    assert corrected.shape == (4, 200, 200)
    assert attrs["method"] == "auto" and attrs["search_binning"] == 2
    assert not set(not_applicable) & set(attrs)


def test_config_schema_takes_auto_and_integers():
    schema = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert config["binning"] == "auto" and config["qc_binning"] == "auto"
    assert config["volume_dtype"] == "float32" and config["volume_crop"] is None
    validate(dict(config), schema)
    validate(dict(config, binning=4, qc_binning=1, volume_dtype="float16", volume_crop={"z": [0, 10]}), schema)
    for bad in ({"binning": "4x"}, {"binning": 0}, {"volume_dtype": "int8"}, {"volume_crop": {"w": [0, 1]}},
                {"volume_crop": {"z": [5]}}):
        with pytest.raises(Exception):
            validate(dict(config, **bad), schema)


# -- part 5: intermediates sized for campaigns --------------------------------------------------------------------

@pytest.fixture
def corrected(tmp_path, small_projections, theta_small):
    """Full-resolution projections (61 angles, 32 rows, 32 columns) as step D writes them."""
    path = tmp_path / "corrected.h5"
    write_stack(path, small_projections, attrs={"source": "x", "pixel_size_um": 0.5},
                extra={"theta_deg": np.rad2deg(theta_small)})
    return path


def test_binned_reconstruction_for_qc(tmp_path, corrected, small_projections, theta_small):
    pipeline.reconstruct(corrected, tmp_path / "v.h5", find_axis=False, backend="torch", device="cpu", binning=2)
    volume, attrs = read_volume(tmp_path / "v.h5")
    binned, _ = bin_projections(small_projections, 2)
    expected = fbp(binned, theta_small, device="cpu")
    assert volume.shape == (16, 16, 16) and volume.dtype == np.float32
    np.testing.assert_allclose(volume, expected, rtol=1e-5, atol=1e-6)
    assert attrs["volume_binning"] == attrs["volume_row_binning"] == 2 and attrs["voxel_size_um"] == pytest.approx(1.0)
    # auto: a 32 px detector stays whole; in chunks: the same volume.
    pipeline.reconstruct(corrected, tmp_path / "auto.h5", find_axis=False, backend="torch", device="cpu",
                         binning="auto")
    assert read_volume(tmp_path / "auto.h5")[0].shape == (32, 32, 32)
    pipeline.reconstruct(corrected, tmp_path / "c.h5", find_axis=False, backend="torch", device="cpu", binning=2,
                         chunk_divisor=5)
    np.testing.assert_array_equal(read_volume(tmp_path / "c.h5")[0], volume)


def test_cropped_and_float16_volumes(tmp_path, corrected):
    options = dict(center=15.5, backend="torch", device="cpu")
    pipeline.reconstruct(corrected, tmp_path / "whole.h5", **options)
    whole, _ = read_volume(tmp_path / "whole.h5")
    crop = {"z": [4, 20], "x": [3, 40]}  # a stop beyond the volume is clipped; y is kept whole
    pipeline.reconstruct(corrected, tmp_path / "crop.h5", crop=crop, chunk_divisor=3, **options)
    cropped, attrs = read_volume(tmp_path / "crop.h5")
    np.testing.assert_array_equal(cropped, whole[4:20, :, 3:32])
    assert json.loads(attrs["crop_origin_zyx"]) == [4, 0, 3]
    pipeline.reconstruct(corrected, tmp_path / "half.h5", dtype="float16", **options)
    with h5py.File(tmp_path / "half.h5") as f:
        assert f["volume"].dtype == np.float16
        half = f["volume"][()].astype(np.float32)
    np.testing.assert_allclose(half, whole, rtol=2e-3, atol=2e-3 * np.abs(whole).max())
    assert (tmp_path / "half.h5").stat().st_size < 0.7 * (tmp_path / "whole.h5").stat().st_size
    with pytest.raises(ValueError, match="keeps nothing"):
        pipeline.reconstruct(corrected, tmp_path / "none.h5", crop={"y": [40, 50]}, **options)
    assert not list(tmp_path.glob("*none.h5*"))


def test_float16_overflow_is_refused_and_leaves_nothing(tmp_path, small_projections, theta_small):
    write_stack(tmp_path / "p.h5", small_projections * 1e6, extra={"theta_deg": np.rad2deg(theta_small)})
    with pytest.raises(ValueError, match="exceed the range of float16"):
        pipeline.reconstruct(tmp_path / "p.h5", tmp_path / "v.h5", find_axis=False, backend="torch", device="cpu",
                             dtype="float16")
    assert not list(tmp_path.glob("*v.h5*"))


def test_full_resolution_intermediates_are_temporary():
    """What nothing needs after the campaign: the full-resolution projections, raw and corrected."""
    rules = (ROOT / "workflow" / "rules" / "preprocess.smk").read_text() + \
        (ROOT / "workflow" / "rules" / "reconstruct.smk").read_text()
    assert 'temp("results/{scan}/projections.h5")' in rules
    assert 'temp("results/{scan}/corrected.h5")' in rules
    assert 'binning=config["qc_binning"]' in rules
    # QC reads the central rows step D keeps, not the stacks, so that neither outlives steps D and E.
    qc_rule = (ROOT / "workflow" / "rules" / "report.smk").read_text().split("rule summary")[0]
    assert "{scan}/projections.h5" not in qc_rule and "{scan}/corrected.h5" not in qc_rule
    assert 'sinograms="results/{scan}/sinograms.h5"' in qc_rule
    assert "priority: 1" in rules.split("rule reconstruct_uncorrected")[1].split("rule ")[0]


# -- part 6: resources that follow the scan; out of memory: a clear error, nothing left, smaller chunks ------------

def test_chunks_halve_with_each_attempt():
    per_row, budget = 1e6, 1000
    first = memory.chunk_length(100_000, per_row, budget)
    for attempt in (2, 3, 4):
        divisor = 2 ** (attempt - 1)  # the rules' chunk_divisor (rules/common.smk)
        n = memory.chunk_length(100_000, per_row, budget, divisor=divisor)
        assert n == pytest.approx(first / divisor, abs=1)
        assert n * per_row * memory.SAFETY * divisor <= budget * 2**20
    # Without a budget the whole is cut into 2, 4, ... chunks (of whole bins).
    assert memory.chunk_length(37, 1e9, None, divisor=2) == 19
    assert memory.chunk_length(37, 1e9, None, divisor=4, multiple=4) == 12
    assert memory.chunk_length(3, 1e9, None, divisor=8) == 1
    rules = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    assert "return 2 ** (attempt - 1)" in rules


class _OutOfMemoryBackend:
    """A backend whose GPU runs out of memory (as torch reports it) at the first call."""

    name, device = "torch", "cuda:0"

    def __init__(self, error):
        self.error = error

    def fbp(self, *args, **kwargs):
        raise self.error

    mlem = reproject = fbp


OUT_OF_MEMORY = [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)"),
    RuntimeError("CUDA error: out of memory"),
    MemoryError("Unable to allocate 4.00 GiB for an array"),
]


@pytest.mark.parametrize("error", OUT_OF_MEMORY, ids=["torch_cuda", "runtime_error", "numpy"])
def test_out_of_memory_says_retry_and_leaves_nothing(tmp_path, corrected, monkeypatch, error):
    monkeypatch.setattr(common, "step_backend", lambda *args, **kwargs: _OutOfMemoryBackend(error))
    out = tmp_path / "volume.h5"
    with pytest.raises(memory.StepOutOfMemoryError, match="retry with smaller chunks") as caught:
        pipeline.reconstruct(corrected, out, find_axis=False, memory_budget_mb=4000, chunk_divisor=2)
    message = str(caught.value)
    assert message.startswith("step E (FBP) ran out of " + ("host" if isinstance(error, MemoryError) else "GPU"))
    assert "4000 MB" in message and "1/2 of the chunk size" in message
    assert caught.value.__cause__ is error
    assert not out.exists() and not list(tmp_path.glob(".volume.h5.*"))


def test_out_of_memory_in_steps_a_to_c_too(tmp_path, monkeypatch, small_projections, theta_small):
    write_stack(tmp_path / "b.h5", small_projections, attrs={"scale": [1, 1]},
                extra={"theta_deg": np.rad2deg(theta_small)})
    asked = []

    def backend(name, device, chunk_slices=None):
        asked.append(chunk_slices)
        return _OutOfMemoryBackend(OUT_OF_MEMORY[0])

    monkeypatch.setattr(common, "step_backend", backend)
    with pytest.raises(memory.StepOutOfMemoryError, match=r"^step A \(MLEM\) ran out of GPU memory"):
        alignment.reconstruct_reference(tmp_path / "b.h5", tmp_path / "mlem.h5", chunk_divisor=4)
    with pytest.raises(memory.StepOutOfMemoryError, match=r"^step C \(registration\) ran out of GPU memory"):
        alignment.register(tmp_path / "b.h5", tmp_path / "shifts.csv", method="iterative")
    assert asked == [8, None]  # 32 slices in 4 chunks on the third attempt; whole on the first
    assert not list(tmp_path.glob("*mlem.h5*")) and not list(tmp_path.glob("*shifts.csv*"))


def test_other_errors_pass_unchanged():
    with pytest.raises(ValueError, match="^not memory$"):
        with memory.out_of_memory_guard("x"):
            raise ValueError("not memory")
    with pytest.raises(RuntimeError, match="^CUDA error: an illegal memory access$"):
        with memory.out_of_memory_guard("x"):
            raise RuntimeError("CUDA error: an illegal memory access")


def test_resources_follow_the_scan():
    small, large = (181, 128, 128), (721, 1024, 1024)
    for step in sizing.STEPS:
        gpu = step not in ("preprocess", "shift_back", "volume_tiff")
        options = dict(binning=auto_binning(1024), qc_binning=auto_binning(1024))
        assert sizing.memory_mb(step, small, gpu=gpu) <= sizing.memory_mb(step, large, gpu=gpu, **options)
        if step == "reproject":  # at auto's search resolution, seconds at either size: the base minutes
            assert sizing.runtime_min(step, small) <= sizing.runtime_min(step, large, **options)
        else:
            assert sizing.runtime_min(step, small) < sizing.runtime_min(step, large, **options)
        assert sizing.runtime_min(step, large, attempt=2, **options) == 2 * sizing.runtime_min(step, large, **options)
        assert sizing.gpu_memory_mb(step, small) <= sizing.gpu_memory_mb(step, large, **options)
    # The full-resolution steps work in chunks: never more than the budget (plus CUDA's own libraries).
    for step in ("preprocess", "shift_back", "reconstruct", "reconstruct_uncorrected"):
        assert sizing.memory_mb(step, (1801, 2048, 2048), memory_budget_mb=3000, qc_binning=8) <= 3000
    # A demo scan asks for far less than the old fixed 4000 MB on CPU; unknown scans get the defaults.
    assert sizing.memory_mb("preprocess", small) <= 600 and sizing.memory_mb("register", small) <= 1000
    assert sizing.memory_mb("preprocess", None) == 4000 and sizing.runtime_min("register", None) == 60
    # What the demo steps used here (logs/*/benchmark.tsv max_rss, MiB) fits their requests.
    for step, used in {"preprocess": 167, "mlem": 447, "register": 614, "reconstruct": 499, "shift_back": 126}.items():
        assert sizing.memory_mb(step, small) >= used, step
    # The per-scan steps' rules ask dejitter.pipeline.sizing (through rules/common.smk), none a fixed size.
    for name in ("preprocess", "align", "reconstruct"):
        rules = (ROOT / "workflow" / "rules" / f"{name}.smk").read_text()
        assert not re.search(r"(mem_mb|runtime)=\d", rules), name
        assert "mem_mb=step_mem_mb(" in rules and "runtime=step_runtime(" in rules, name

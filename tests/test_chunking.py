"""Steps on full-resolution data in chunks: same arrays whatever the chunk size, chunks within the budget."""

import h5py
import numpy as np
import pytest

from dejitter.files import read_stack, read_volume, write_shifts, write_stack
from dejitter.pipeline import memory
from dejitter.pipeline import steps as pipeline
from dejitter.preprocessing import normalise, prepare_for_registration
from dejitter.readers import write_dxchange
from dejitter.shifting import correct


def _arrays(path):
    with h5py.File(path, "r") as f:
        return {key: f[key][()] for key in f}


def _assert_same_files(first, second):
    a, b = _arrays(first), _arrays(second)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


@pytest.fixture
def chunks_of(monkeypatch):
    """Force a chunk length (rounded down to the multiple the step asks for, at least one unit)."""
    def force(n):
        monkeypatch.setattr(pipeline, "chunk_for_budget",
                            lambda what, total, per_unit, budget, fixed_bytes=0, multiple=1, divisor=1:
                            max(multiple, n // multiple * multiple))
    return force


@pytest.fixture(scope="module")
def raw_scan(tmp_path_factory, small_projections, theta_small):
    """Counts with flats and darks, a dead pixel column, a few NaN and inf, 33 rows (odd: a remainder row)."""
    rng = np.random.default_rng(5)
    line = np.concatenate([small_projections, small_projections[:, :1]], axis=1)  # 33 rows
    flats = rng.normal(1000, 5, (3,) + line.shape[1:]).astype(np.float32)
    darks = rng.normal(100, 2, (2,) + line.shape[1:]).astype(np.float32)
    flats[:, 7, 11] = 50  # dead: flat below dark
    data = (darks.mean(0) + (np.median(flats, 0) - darks.mean(0)) * np.exp(-0.1 * line)).astype(np.float32)
    data[3, 5, 6] = np.nan
    data[40, 20, 2] = np.inf
    data[10, 32, 31] = 0.0  # transmission below the floor
    path = tmp_path_factory.mktemp("raw") / "scan.h5"
    write_dxchange(path, data, np.rad2deg(theta_small), flats=flats, darks=darks)
    return path, data, flats, darks


@pytest.mark.parametrize("binning", [1, 2, 4])
def test_preprocess_chunked_equals_whole(tmp_path, raw_scan, chunks_of, binning):
    path, data, flats, darks = raw_scan
    outputs = {}
    for n in (None, 1, 3, 8):
        if n:
            chunks_of(n)
        out = tmp_path / str(n)
        pipeline.preprocess(path, out / "p.h5", out / "b.h5", binning=binning, median_size=3)
        outputs[n] = out
    for n in (1, 3, 8):
        _assert_same_files(outputs[None] / "p.h5", outputs[n] / "p.h5")
        _assert_same_files(outputs[None] / "b.h5", outputs[n] / "b.h5")
    # ... and the same as the whole-array functions of the library.
    line = normalise(data, flats, darks)
    binned, scale = prepare_for_registration(line, binning=binning, median_size=3)
    assert np.array_equal(read_stack(outputs[3] / "p.h5")[0], line)
    assert np.array_equal(read_stack(outputs[3] / "b.h5")[0], binned)


def test_preprocess_refuses_bad_scans_in_chunks(tmp_path, raw_scan, chunks_of):
    path, data, flats, darks = raw_scan
    bad = data.copy()
    bad[:, :2] = np.nan  # 6 % of pixels
    write_dxchange(tmp_path / "bad.h5", bad, np.linspace(0, 180, len(bad)), flats=flats, darks=darks)
    chunks_of(4)
    with pytest.raises(Exception, match="% of pixels are NaN or inf"):
        pipeline.preprocess(tmp_path / "bad.h5", tmp_path / "p.h5", tmp_path / "b.h5")
    assert not list(tmp_path.glob("*p.h5*")) and not list(tmp_path.glob("*b.h5*"))


def test_shift_back_and_reconstruct_chunked_equal_whole(tmp_path, small_projections, theta_small, chunks_of):
    rng = np.random.default_rng(2)
    projections = small_projections[:, :20]
    write_stack(tmp_path / "p.h5", projections, attrs={"source": "x"}, extra={"theta_deg": np.rad2deg(theta_small)})
    shifts = rng.uniform(-3, 3, (len(theta_small), 2))
    write_shifts(tmp_path / "shifts.csv", np.rad2deg(theta_small), shifts)
    runs = {}
    for n in (None, 1, 7):
        if n:
            chunks_of(n)
        out = tmp_path / str(n)
        pipeline.shift_back(tmp_path / "p.h5", tmp_path / "shifts.csv", out / "c.h5", sinograms_out=out / "s.h5")
        pipeline.reconstruct(out / "c.h5", out / "v.h5", backend="torch", device="cpu")
        runs[n] = out
    for n in (1, 7):
        _assert_same_files(runs[None] / "c.h5", runs[n] / "c.h5")
        _assert_same_files(runs[None] / "v.h5", runs[n] / "v.h5")
        assert read_volume(runs[None] / "v.h5")[1]["center"] == read_volume(runs[n] / "v.h5")[1]["center"]
        _assert_same_files(runs[None] / "s.h5", runs[n] / "s.h5")
    written = read_stack(runs[7] / "c.h5")[0]
    assert np.array_equal(written, correct(projections, np.round(shifts, 5)))
    # What the QC figure reads instead of the stacks: their central row, before and after.
    sinograms, attrs, _ = read_stack(runs[7] / "s.h5", name="sinograms")
    assert attrs["row"] == 10
    assert np.array_equal(sinograms, np.stack([projections[:, 10], written[:, 10]]))


@pytest.mark.parametrize("budget_mb, reserved_mb, per_unit, multiple",
                         [(100, 30, 1e6, 1), (100, 30, 3e5, 4), (4000, 300, 7.3e6, 2), (50, 10, 2e5, 3)])
def test_chunk_length_respects_budget(budget_mb, reserved_mb, per_unit, multiple):
    total = 100_000
    n = memory.chunk_length(total, per_unit, budget_mb, reserved_bytes=reserved_mb * 2**20, multiple=multiple)
    assert n % multiple == 0 and n >= multiple
    assert reserved_mb * 2**20 + n * per_unit * memory.SAFETY <= budget_mb * 2**20
    # ... and is the largest such multiple.
    assert reserved_mb * 2**20 + (n + multiple) * per_unit * memory.SAFETY > budget_mb * 2**20


def test_chunk_length_limits():
    assert memory.chunk_length(37, 1e9, None) == 37  # no budget: all at once
    assert memory.chunk_length(37, 1.0, 4000) == 37  # everything fits
    assert memory.chunk_length(37, 1e12, 10, multiple=2) == 2  # not even one unit fits: one unit, not a refusal


def test_tiny_budget_chunks_for_real(tmp_path, raw_scan, caplog):
    path = raw_scan[0]
    budget = (memory.resident_bytes() + 20 * pipeline.PREPROCESS_BYTES * 61 * 32 * memory.SAFETY) / 2**20
    with caplog.at_level("INFO", logger="dejitter"):
        pipeline.preprocess(path, tmp_path / "p.h5", tmp_path / "b.h5", memory_budget_mb=budget)
    assert "angles in" in caplog.text
    pipeline.preprocess(path, tmp_path / "p0.h5", tmp_path / "b0.h5")
    _assert_same_files(tmp_path / "p.h5", tmp_path / "p0.h5")

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dejitter.metrics import shift_error
from dejitter.preprocessing import normalise, prepare_for_registration
from dejitter.reconstruction import reproject
from dejitter.registration import estimate_shifts
from dejitter.registration.network import DejitterNet, load_model, predict_jitter, prepare_pairs, save_model
from dejitter.shifting import displace
from dejitter.training.synthesis import add_salt_and_pepper, phantom, random_jitter, simulate_counts
from dejitter.training.train import make_dataset, read_dataset, train, write_dataset
from dejitter.types import ModelError

SHIPPED = Path(__file__).resolve().parents[1] / "resources" / "models" / "dejitter_resnet.pt"


def test_model_maps_a_batch_to_shifts_and_one_pair_alone_gives_the_same():
    torch.manual_seed(0)
    model = DejitterNet(32).eval()
    pairs = torch.randn(5, 2, 32, 32)
    with torch.no_grad():
        batch = model(pairs)
        alone = model(pairs[2:3])
    assert batch.shape == (5, 2)
    assert torch.allclose(batch[2:3], alone, atol=1e-5)


def test_pairs_are_normalised_each_on_its_own():
    rng = np.random.default_rng(0)
    raw = rng.random((3, 20, 30)).astype(np.float32)
    ref = rng.random((3, 20, 30)).astype(np.float32)
    pairs, scale = prepare_pairs(raw, ref, 16)
    other, _ = prepare_pairs(raw[:1] * 100 + 5, ref[:1], 16)
    assert pairs.shape == (3, 2, 16, 16) and list(scale) == [2, 2]
    assert np.allclose(pairs[0], other[0], atol=1e-4)  # independent of scale and of neighbours


def test_a_few_training_steps_lower_the_loss(tmp_path):
    dataset = make_dataset(range(3), input_size=32, processes=1, progress=False,
                           conditions=_tiny_conditions())
    _, history = train(dataset, checkpoint=tmp_path / "ck.pt", metrics_csv=tmp_path / "m.csv", epochs=4,
                       batch_size=16, lr=2e-3, input_size=32, val_fraction=0.34, progress=False, device="cpu")
    assert history[-1]["train_mse"] < history[0]["train_mse"]
    assert (tmp_path / "m.csv").read_text().count("\n") == 5
    # Resuming from the checkpoint continues at the next epoch instead of starting over.
    _, resumed = train(dataset, checkpoint=tmp_path / "ck.pt", metrics_csv=tmp_path / "m.csv", epochs=5,
                       batch_size=16, input_size=32, val_fraction=0.34, progress=False, device="cpu")
    assert [row["epoch"] for row in resumed] == [1, 2, 3, 4, 5]


def test_a_time_budget_shortens_the_schedule_so_it_still_anneals(tmp_path, monkeypatch):
    import dejitter.training.train as training

    clock = iter(range(0, 10_000, 10))  # every reading of the clock: 10 s later
    monkeypatch.setattr(training.time, "time", lambda: next(clock))
    dataset = make_dataset(range(2), input_size=32, processes=1, progress=False, conditions=_tiny_conditions())
    _, history = train(dataset, checkpoint=tmp_path / "ck.pt", metrics_csv=tmp_path / "m.csv", epochs=10,
                       batch_size=16, lr=2e-3, input_size=32, val_fraction=0.5, progress=False, device="cpu",
                       time_budget_s=50)
    # The first epoch "took" 20 s, so 50 s afford 2 epochs: the cosine ends there, at a learning rate of 0.
    assert len(history) == 2
    assert history[-1]["lr"] < 1e-9 < history[0]["lr"]


def test_fine_tuning_starts_from_the_given_weights_and_the_card_names_them(tmp_path):
    from dejitter.training.train import main

    dataset = make_dataset(range(3), input_size=32, processes=1, progress=False, conditions=_tiny_conditions())
    write_dataset(tmp_path / "pairs.h5", dataset)
    args = ["--dataset", str(tmp_path / "pairs.h5"), "--input-size", "32", "--batch-size", "16", "--threads", "1"]
    assert main(args + ["--out", str(tmp_path / "parent" / "m.pt"), "--epochs", "3", "--lr", "2e-3"]) == 0
    assert main(args + ["--out", str(tmp_path / "child" / "m.pt"), "--epochs", "1", "--lr", "1e-4",
                        "--init-model", str(tmp_path / "parent" / "m.pt")]) == 0
    parent = json.loads((tmp_path / "parent" / "m.json").read_text())
    child = json.loads((tmp_path / "child" / "m.json").read_text())
    # Epoch 0 is the parent's weights on the same validation scans: its last validation MSE exactly.
    assert child["initialised_from"]["sha256"] == parent["sha256"]
    assert child["initialised_from"]["validation_mse_px2_network_input"] == pytest.approx(
        parent["validation_mse_px2_network_input"], rel=1e-6)
    assert child["hyperparameters"]["epochs_run"] == 1 and [row["epoch"] for row in child["history"]] == [1]
    assert (tmp_path / "child" / "metrics.csv").read_text().splitlines()[1].startswith("0,nan,")
    # A start of another geometry is refused before any training.
    save_model(DejitterNet(64, references="full"), tmp_path / "other.pt", {})
    with pytest.raises(ValueError, match="train from scratch"):
        train(dataset, checkpoint=tmp_path / "ck.pt", metrics_csv=tmp_path / "x.csv", epochs=1, input_size=32,
              progress=False, device="cpu", init_model=tmp_path / "other.pt")


def test_the_card_records_the_jitter_the_training_targets_cover():
    from dejitter.registration.network import trained_amplitude
    from dejitter.training.train import covered_amplitude

    targets = np.random.default_rng(0).uniform(-11, 11, (10_000, 2)).astype(np.float32)
    dataset = {"targets": targets, "conditions": {"size": 128, "binning": 2}}
    covered = covered_amplitude(dataset, input_size=64)  # 64 px network input: 2 px of the scan each
    assert 21.9 < covered < 22.0
    card = {"trained_amplitude_px_input": covered, "training_data": {"conditions": dataset["conditions"]}}
    assert trained_amplitude(card, (128, 128)) == pytest.approx(covered)
    assert trained_amplitude(card, (256, 256)) == pytest.approx(2 * covered)  # binned 4 to reach 64 px


def _tiny_conditions():
    from dejitter.training.data import TrainingConditions

    # Few angles, full-height detectors: the loop, not the data, is under test (tests/test_training_data.py).
    return TrainingConditions(size=32, binning=1, mlem_iter=5, amplitude=3.0, angles=(91, 181),
                              short_detector_probability=0.0)


def test_tampered_or_missing_model_is_refused(tmp_path):
    model = DejitterNet(32)
    save_model(model, tmp_path / "m.pt", {"note": "test"})
    loaded, card = load_model(tmp_path / "m.pt")
    assert card["input_size"] == 32
    with open(tmp_path / "m.pt", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ModelError, match="fails its checksum"):
        load_model(tmp_path / "m.pt")
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "absent.pt")
    shutil.copy(tmp_path / "m.pt", tmp_path / "nocard.pt")
    with pytest.raises(ModelError, match="card"):
        load_model(tmp_path / "nocard.pt")


def test_the_model_reads_the_references_it_was_trained_on(tmp_path):
    from dejitter.files import read_stack, write_stack
    from dejitter.pipeline.alignment import reconstruct_reference, register, reproject_reference, uses_leave_out

    save_model(DejitterNet(32, references="full"), tmp_path / "full.pt", {"trained_amplitude_px_input": 3.0})
    card = json.loads((tmp_path / "full.json").read_text())
    legacy = dict(card)
    del legacy["references"]
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    shutil.copy(tmp_path / "full.pt", tmp_path / "legacy.pt")
    assert load_model(tmp_path / "full.pt")[0].references == "full"
    assert load_model(tmp_path / "legacy.pt")[0].references == "leave_out"  # cards before the choice
    assert not uses_leave_out("network", tmp_path / "full.pt")
    assert uses_leave_out("network", tmp_path / "legacy.pt") and uses_leave_out("phase_correlation")

    theta_deg = np.linspace(0, 180, 12)
    rng = np.random.default_rng(0)
    projections = reproject(phantom(32, "particle", rng), np.deg2rad(theta_deg), device="cpu")
    write_stack(tmp_path / "binned.h5", projections, attrs={"scale": [1.0, 1.0]}, extra={"theta_deg": theta_deg})
    for leave_out, volumes in ((True, 2), (False, 1)):
        reconstruct_reference(tmp_path / "binned.h5", tmp_path / "mlem.h5", leave_out=leave_out, mlem_iter=2,
                              backend="torch", device="cpu")
        assert read_stack(tmp_path / "mlem.h5")[0].shape[0] == volumes
        reproject_reference(tmp_path / "binned.h5", tmp_path / "mlem.h5", tmp_path / "ref.h5", backend="torch",
                            device="cpu")
        kind = read_stack(tmp_path / "ref.h5")[1]["references"]
        assert kind == ("leave_out" if leave_out else "full")
        if leave_out:  # a stale reprojection of the other kind is refused, not misread
            with pytest.raises(ValueError, match="leave_out references.*rerun steps A and B"):
                register(tmp_path / "binned.h5", tmp_path / "shifts.csv", references_path=tmp_path / "ref.h5",
                         method="network", model_path=tmp_path / "full.pt", backend="torch", device="cpu")
    provenance = register(tmp_path / "binned.h5", tmp_path / "shifts.csv", references_path=tmp_path / "ref.h5",
                          method="network", model_path=tmp_path / "full.pt", backend="torch", device="cpu")
    assert provenance["references"] == "full"


def test_inference_is_deterministic():
    torch.manual_seed(1)
    model = DejitterNet(32).eval()
    rng = np.random.default_rng(2)
    raw, ref = rng.random((2, 7, 32, 32)).astype(np.float32)
    first, q1 = predict_jitter(model, raw, ref, device="cpu", batch_size=3)
    second, q2 = predict_jitter(model, raw, ref, device="cpu", batch_size=3)
    assert np.array_equal(first, second) and np.array_equal(q1["spread"], q2["spread"])
    # Another batch size may pick other convolution kernels: equal to float32 rounding.
    third, _ = predict_jitter(model, raw, ref, device="cpu", batch_size=7)
    assert np.allclose(first, third, atol=1e-4)


def _noisy_scan(seed, salt_pepper):
    rng = np.random.default_rng(seed)
    theta = np.deg2rad(np.linspace(0, 180, 91))
    ideal = reproject(phantom(128, "particle", rng), theta, device="cpu")
    ideal *= 2.0 / ideal.max()
    jitter = random_jitter(len(theta), 20.0, rng)
    data, flats, darks = simulate_counts(displace(ideal, jitter), photons=3000, rng=rng)
    measured = add_salt_and_pepper(normalise(data, flats, darks), salt_pepper, rng)
    binned, scale = prepare_for_registration(measured, binning=2, median_size=3)
    return binned, theta, jitter, scale


@pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped model yet (train with 'snakemake train')")
def test_shipped_model_beats_phase_correlation_on_a_noisy_scan():
    model, card = load_model(SHIPPED)
    binned, theta, jitter, scale = _noisy_scan(seed=123456, salt_pepper=0.3)
    # Each method on the references it reads: the network on those of its training (its card).
    network, _ = estimate_shifts(binned, theta, "network", model=model)
    correlation, _ = estimate_shifts(binned, theta, "phase_correlation")
    network_mse = shift_error(network * scale, jitter, theta)["mse"]
    correlation_mse = shift_error(correlation * scale, jitter, theta)["mse"]
    assert network_mse < 0.5 * correlation_mse, (network_mse, correlation_mse)
    assert network_mse < 4.0
    assert json.loads(SHIPPED.with_suffix(".json").read_text())["sha256"] == card["sha256"]


def test_aligned_scans_of_a_beamline_become_training_pairs(tmp_path):
    from dejitter.readers import write_dxchange

    theta_deg = np.linspace(0, 180, 21)
    ideal = reproject(phantom(32, "foam", np.random.default_rng(4)), np.deg2rad(theta_deg), device="cpu")
    data, flats, darks = simulate_counts(ideal / ideal.max(), photons=20000, rng=np.random.default_rng(5))
    write_dxchange(tmp_path / "aligned.h5", data, theta_deg, flats, darks)
    dataset = make_dataset([], conditions=_tiny_conditions(), input_size=32, processes=1, progress=False,
                           aligned_scans=[tmp_path / "aligned.h5"], aligned_repeats=2)
    assert dataset["pairs"].shape == (42, 2, 32, 32)
    assert len(np.unique(dataset["scan"])) == 2  # two jittered copies, each its own validation group
    # The tiny conditions' amplitude (3 px), less the rigid motion no pair can show (zero mean per scan).
    assert 0.5 < np.abs(dataset["targets"]).max() <= 2 * 3.0
    for scan in np.unique(dataset["scan"]):
        np.testing.assert_allclose(dataset["targets"][dataset["scan"] == scan].mean(axis=0), 0, atol=1e-5)
    # A small set (fewer pairs than one HDF5 chunk) is written and read back whole, conditions included.
    write_dataset(tmp_path / "pairs.h5", dataset)
    back = read_dataset(tmp_path / "pairs.h5")
    np.testing.assert_array_equal(back["targets"], dataset["targets"])
    assert back["conditions"] == json.loads(json.dumps(dataset["conditions"]))  # ranges come back as lists
    assert back["conditions"]["references"] == "full"

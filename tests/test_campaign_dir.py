"""The workflow run from a campaign directory of its own, and used as a Snakemake module.

A campaign directory holds its own ``config/config.yaml`` and scan table; everything the workflow
ships (library, model, default settings, schemas, report captions) is found from the checkout.
"""

import json
import subprocess

import pytest
import yaml

from campaign import CORES, ROOT, SNAKEMAKE, make_campaign

SNAKEFILE = ROOT / "workflow" / "Snakefile"
# One tiny scan through the default method, the shipped network, named as config.yaml names it
# (relative to the checkout, not to the campaign directory).
TINY = {"tiny": ("particle", 1)}
SMALL = dict(method="network", model="resources/models/dejitter_resnet.pt", network_passes=1, size=32, angles=31)


def snakemake(cwd, *args, timeout=600):
    return subprocess.run([str(SNAKEMAKE), "--cores", CORES, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def check_outputs(work):
    out = work / "results" / "tiny"
    assert (out / "volume.h5").exists() and (out / "qc" / "shifts.png").exists()
    assert (work / "results" / "summary.tsv").exists()
    card = json.loads((ROOT / "resources" / "models" / "dejitter_resnet.json").read_text())
    assert json.loads((out / "registration.json").read_text())["model_sha256"] == card["sha256"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mse_vs_truth_px2"] < 0.2 * metrics["mse_uncorrected_px2"], metrics
    assert not (work / "resources").exists()


@pytest.mark.workflow
def test_campaign_directory(tmp_path):
    """`snakemake -s <checkout>/workflow/Snakefile --directory <campaign>` from a third directory,
    with a campaign config that sets only a few keys (the rest: the shipped defaults)."""
    work = make_campaign(tmp_path / "campaign7", TINY, **SMALL)
    full = yaml.safe_load((work / "config" / "config.yaml").read_text())
    short = {key: full[key] for key in ("binning", "mlem_iterations", "network_passes", "demo")}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(short))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = snakemake(elsewhere, "-s", str(SNAKEFILE), "--directory", str(work))
    assert result.returncode == 0, result.stderr[-3000:]
    check_outputs(work)
    assert not list(elsewhere.iterdir())


@pytest.mark.workflow
def test_module(tmp_path):
    """A campaign Snakefile that uses the workflow as a module, as `snakedeploy deploy-workflow`
    writes it; the report finds the captions in the checkout."""
    work = make_campaign(tmp_path, TINY, **SMALL)
    (work / "workflow").mkdir()
    module = (f'configfile: "config/config.yaml"\n\n\n'
              f'module dejitter:\n    snakefile:\n        "{SNAKEFILE}"\n    config:\n        config\n\n\n')
    snakefile = work / "workflow" / "Snakefile"
    # Without a prefix, the rules keep their names (targets such as `train` as documented).
    snakefile.write_text(module + "use rule * from dejitter\n")
    plan = snakemake(work, "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "register" in plan.stdout and "summary" in plan.stdout
    snakefile.write_text(module + "use rule * from dejitter as dejitter_*\n")
    result = snakemake(work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dejitter_register" in result.stdout + result.stderr
    check_outputs(work)
    report = snakemake(work, "--report", "report.zip")
    assert report.returncode == 0, report.stderr[-3000:]


def test_missing_scan_table_is_one_clear_line(tmp_path):
    """No config/config.yaml (the shipped settings apply) and no scan table: one line, no traceback."""
    result = snakemake(tmp_path, "-s", str(SNAKEFILE), "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "scan table config/scans.tsv not found" in output and str(tmp_path) in output
    assert "--config scans=" in output
    assert "Traceback" not in output and "pandas" not in output
    # The same with a configuration given on the command line only.
    (tmp_path / "settings.yaml").write_text("scans: beamtime/scans.tsv\nmethod: iterative\n")
    result = snakemake(tmp_path, "-s", str(SNAKEFILE), "--configfile", "settings.yaml", "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "scan table beamtime/scans.tsv not found" in output
    assert "Traceback" not in output


def test_training_directory_plans_a_fine_tuning_from_the_model_it_names(tmp_path):
    """`snakemake train` in a directory of its own (a header-only scan table), fine-tuning the
    shipped weights: the plan names them as the training's input and says what it does."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "scans.tsv").write_text("scan\tpath\n")
    shipped = ROOT / "resources" / "models" / "dejitter_resnet.pt"
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({"train": {"scans": 8, "init_model": str(shipped)}}))
    plan = snakemake(tmp_path, "-s", str(SNAKEFILE), "-n", "train", "--printshellcmds")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert f"Training the network (fine-tuning {shipped}" in plan.stdout
    assert "Training data: 8 synthetic scans" in plan.stdout
    # A start that does not exist is a missing input, before any synthesis runs.
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({"train": {"init_model": "gone.pt"}}))
    plan = snakemake(tmp_path, "-s", str(SNAKEFILE), "-n", "train")
    assert plan.returncode != 0 and "gone.pt" in plan.stdout + plan.stderr

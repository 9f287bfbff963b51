"""The workflow stays formatted (snakefmt) and lint-free (snakemake --lint)."""

import subprocess
import sys
from pathlib import Path

from campaign import ROOT, SNAKEMAKE, make_campaign

SNAKEFMT = Path(sys.executable).parent / "snakefmt"


def test_snakefmt_check():
    """`snakefmt --check workflow/` (installed with the test extras); `snakefmt workflow/` fixes it."""
    result = subprocess.run([str(SNAKEFMT), "--check", "workflow/"], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint(tmp_path):
    """`snakemake --lint` exits 0 even when it prints lints, so the output is checked."""
    work = make_campaign(tmp_path, {"tiny": ("particle", 1)})
    result = subprocess.run([str(SNAKEMAKE), "-s", str(ROOT / "workflow" / "Snakefile"), "--directory", str(work),
                             "--lint"], capture_output=True, text=True, cwd=work, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output, output
    assert "your workflow is in a good condition" in output, output

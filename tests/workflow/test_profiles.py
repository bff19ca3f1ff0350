"""The SLURM profile: tracked workflow needs only; site settings come from an untracked profile."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.workflow

SITE_KEYS = ("slurm_partition", "slurm_account", "qos", "slurm_extra")


def test_the_tracked_slurm_profile_holds_no_site_settings():
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert "default-resources" not in profile  # a site profile's would replace it whole
    assert not {"slurm-status-command", "slurm-no-account"} & set(profile)
    for rule, resources in profile["set-resources"].items():
        assert not set(resources) & set(SITE_KEYS), rule
    ignored = subprocess.run(["git", "check-ignore", "-q", "profiles/site/config.yaml"],
                             cwd=REPO)
    assert ignored.returncode == 0  # the documented place for the site profile


def test_a_site_profile_adds_to_the_tracked_one(study):
    site = study.root / "profiles" / "site"
    site.mkdir()
    (site / "config.yaml").write_text(yaml.safe_dump({
        "default-resources": {"slurm_partition": "gpu-a100", "slurm_account": "proj42",
                              "qos": "normal"}}))
    out = study.snakemake("-n", "--profile", "profiles/slurm", "--profile", "profiles/site",
                          "--configfile", "config/test.yaml").stdout
    resources = re.findall(r"^\s+resources: (.*)$", out, re.MULTILINE)
    assert resources
    for line in resources:  # the site's settings reach every job
        assert {"slurm_partition=gpu-a100", "slurm_account=proj42", "qos=normal"} <= set(
            line.split(", ")), line
    gpu_jobs = [line for line in resources if "gpu=8" in line]  # and the tracked GPUs stay
    assert len(gpu_jobs) >= 10

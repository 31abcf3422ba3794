"""How `submit --wait` reads EMR's answers. moto cannot fail a step, so the FAILED answer here is
the shape EMR's DescribeStep documents, fed to the same `follow` the command uses."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from campaign_pipeline.ops.deploy import submit as submit_ops
from campaign_pipeline.ops.deploy.schedules import JOB_FILES

ROOT = Path(__file__).resolve().parents[2]


class _Steps:
    def __init__(self, states):
        self.states = list(states)

    def describe_step(self, ClusterId, StepId):  # noqa: N803 - boto3's names
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        status = {"State": state}
        if state == "FAILED":
            status["FailureDetails"] = {"Reason": "Unknown Error.", "Message": "exit code 4: registrations: schema",
                                        "LogFile": "s3://logs/j-1/steps/s-1/stderr.gz"}  # fmt: skip
        return {"Step": {"Status": status}}

    def describe_cluster(self, ClusterId):  # noqa: N803
        return {"Cluster": {"Status": {"State": "RUNNING"}}}


def test_a_failed_step_exits_with_emr_reason_message_and_log_and_every_state_change_is_printed():
    sub = submit_ops.Submission("steps", "s-1", "j-1", {})
    out = io.StringIO()
    clock = iter(range(0, 1000, 30))
    with pytest.raises(submit_ops.SubmitError) as err:
        submit_ops.follow(sub, {"emr": _Steps(["PENDING", "RUNNING", "RUNNING", "FAILED"])}, out,
                          clock=lambda: next(clock), sleep=lambda s: None)  # fmt: skip
    assert err.value.exit_code == 6
    assert str(err.value) == (
        "step s-1 on j-1 ended FAILED: Unknown Error.; exit code 4: registrations: schema; "
        "s3://logs/j-1/steps/s-1/stderr.gz"
    )
    assert [line.split(": ")[1].split(" (")[0] for line in out.getvalue().splitlines()] == [
        "PENDING",
        "RUNNING",
        "FAILED",
    ]


def test_wait_gives_up_after_its_timeout_and_says_the_job_goes_on():
    sub = submit_ops.Submission("steps", "s-1", "j-1", {})
    clock = iter(range(0, 10_000, 60))
    with pytest.raises(submit_ops.SubmitError, match="still RUNNING after 300 s"):
        submit_ops.follow(sub, {"emr": _Steps(["RUNNING"])}, io.StringIO(), timeout_seconds=300,
                          clock=lambda: next(clock), sleep=lambda s: None)  # fmt: skip


def test_every_job_a_schedule_or_submit_can_name_has_an_entry_point():
    for verb, job in JOB_FILES.items():
        assert (ROOT / "jobs" / f"{job}.py").is_file(), verb
    for path in (ROOT / "jobs").glob("*.py"):
        assert "from campaign_pipeline.cli import main" in path.read_text(), path.name

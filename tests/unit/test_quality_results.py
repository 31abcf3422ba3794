"""What the pipeline keeps of a great-expectations result that raised: the message masked in the
observed values and in `dq_results`' JSON, no traceback, in both shapes great-expectations gives."""

from __future__ import annotations

import json

from great_expectations.core.expectation_validation_result import ExpectationValidationResult
from great_expectations.validator.exception_info import ExceptionInfo

from campaign_pipeline.quality.expectations import WARNING, check_result, expectations

PHONE, EMAIL = "+12125550101", "ann.lee@gmail.com"
MESSAGE = f"[CAST_INVALID_INPUT] The value '{PHONE}' of the type STRING cannot be cast; row of {EMAIL}"


def _result(exception_info, **kwargs) -> ExpectationValidationResult:
    expectation = expectations().ExpectColumnValuesToNotBeNull(column="mobile_number")
    expectation.severity = WARNING
    return ExpectationValidationResult(
        expectation_config=expectation.configuration, exception_info=exception_info, **kwargs
    )


def _raised() -> ExceptionInfo:
    return ExceptionInfo(exception_traceback=f"Traceback (most recent call last): {MESSAGE}", exception_message=MESSAGE)


def test_an_exception_s_message_is_masked_and_its_traceback_dropped_in_both_shapes():
    flat = _result(_raised(), success=False)
    per_metric = _result({"('column_values.nonnull.unexpected_count', 'x')": _raised()}, success=False)
    for raw in (flat, per_metric):
        kept = check_result("wave_messages", raw)
        stored = json.dumps(kept.result) + json.dumps(kept.observed) + kept.line()
        assert PHONE not in stored and EMAIL not in stored and "Traceback" not in stored
        assert kept.observed["error"].startswith("[CAST_INVALID_INPUT] The value '+1******0101'")
        assert "a***@gmail.com" in kept.observed["error"] and "a***@gmail.com" in json.dumps(kept.result)
        assert (kept.table, kept.expectation, kept.severity, kept.success) == (
            "wave_messages", "expect_column_values_to_not_be_null(mobile_number)", WARNING, False,
        )  # fmt: skip


def test_a_result_that_raised_nothing_keeps_its_counts_and_no_error():
    fine = _result(None, success=True, result={"element_count": 3, "unexpected_count": 0, "unexpected_percent": 0.0})
    kept = check_result("wave_messages", fine)
    assert kept.observed == {"element_count": 3, "unexpected_count": 0, "unexpected_percent": 0.0}
    assert kept.result == fine.to_json_dict() and kept.success

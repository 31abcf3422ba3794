"""What `dq_results` keeps of a great-expectations result that raised: the message masked, no traceback."""

from __future__ import annotations

import json

from campaign_pipeline.quality.expectations import _exception_messages, _kept

PHONE, EMAIL = "+12125550101", "ann.lee@gmail.com"


def _raised(message: str) -> dict:
    return {"raised_exception": True, "exception_message": message, "exception_traceback": f"Traceback: {message}"}


def test_an_exception_s_message_is_masked_and_its_traceback_dropped_in_both_shapes_great_expectations_gives():
    message = f"[CAST_INVALID_INPUT] The value '{PHONE}' of the type STRING cannot be cast; row of {EMAIL}"
    flat = {"success": False, "result": {}, "exception_info": _raised(message)}
    per_metric = {"success": False, "exception_info": {"('column_values.match_regex', 'x')": _raised(message)}}
    for result in (flat, per_metric):
        kept = json.dumps(_kept(result))
        assert PHONE not in kept and EMAIL not in kept and "Traceback" not in kept
        assert "+1******0101" in kept and "a***@gmail.com" in kept and "CAST_INVALID_INPUT" in kept
        assert _exception_messages(result["exception_info"]) == [message]  # masked where it is stored


def test_a_result_that_raised_nothing_is_kept_as_it_is():
    fine = {"success": True, "result": {"element_count": 3}, "exception_info": {"raised_exception": False,
            "exception_message": None, "exception_traceback": None}}  # fmt: skip
    assert _kept(fine) == fine and _exception_messages(fine["exception_info"]) == []

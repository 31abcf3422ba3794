"""Slack messages through an incoming webhook (slack-sdk's `WebhookClient`): counts only.

The webhook URL is a secret: it comes from the environment variable named by
`secrets.slack_webhook_env` (default `SLACK_WEBHOOK_URL`) or the Secrets Manager secret it
references (`secret_values`), never from a file. Unset → quiet. A
message never carries a phone number, an email or a code: summaries hold counts, and an alert's
error line is scrubbed (emails and phone-like digit runs masked) and cut short. Slack being down
never fails a stage: the problem is printed and the run goes on.
"""

from __future__ import annotations

import sys

from campaign_pipeline.privacy import scrub


def webhook_url(env) -> str | None:
    from campaign_pipeline.secret_values import secret

    try:
        return secret(env, "slack_webhook") or None
    except Exception as exc:  # noqa: BLE001 - Slack never fails a stage
        print(f"slack: no webhook ({scrub(str(exc))})", file=sys.stderr)
        return None


def post(env, text: str) -> bool:
    """Send `text` to the environment's webhook; False when unset or Slack did not take it."""
    url = webhook_url(env)
    if not url:
        return False
    from slack_sdk.webhook import WebhookClient

    try:
        response = WebhookClient(url, timeout=10).send(text=text)
    except Exception as exc:  # noqa: BLE001 - Slack is a side channel: never fail the stage for it
        print(f"slack: could not post ({type(exc).__name__}); the run goes on", file=sys.stderr)
        return False
    if response.status_code >= 300:
        print(f"slack: webhook answered {response.status_code}; the run goes on", file=sys.stderr)
        return False
    return True


def wave_summary(campaign_id: str, wave_id: str, status: str, counts: dict[str, int]) -> str:
    figures = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    return f":incoming_envelope: campaign {campaign_id} · {wave_id} {status}: {figures}"


def stage_failure(campaign_id: str, stage: str, run_id: str, exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    first = scrub(lines[0], limit=200) if lines else ""
    return (
        f":rotating_light: campaign {campaign_id} · stage {stage} failed (run {run_id}): {type(exc).__name__}: {first}"
    )

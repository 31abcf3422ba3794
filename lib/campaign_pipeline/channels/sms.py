"""SMS through the gateway: `POST {sms_url}/messages` at a bounded pace, retried on transient errors.

One call of `send_sms` sends one batch of messages (what one Spark task holds) with asyncio and
aiohttp: at most `pace.max_in_flight` requests at once (an asyncio semaphore and the connection
pool) and at most `pace.rate_per_second` request starts per second (`pace.Spacing`); a request
takes its in-flight slot before its turn to start. Each message is attempted up to
`pace.max_attempts` times: 429, 5xx, connection errors and timeouts are retried after the
gateway's `Retry-After` (up to `pace.retry_after_max_seconds`; a longer one defers the message,
and every message of the task not yet started, to a later run: no outcome, no attempt spent) or
else with exponential backoff and jitter; any other 4xx fails the message at once with the status
and the gateway's error text (personal data and the message's code masked). No request starts
after the task's window closes (`pace.Window`: the lease time it was given): such messages are
`deferred` too. Every request carries `Idempotency-Key: <message_id>`, so a message re-sent after a
crash is delivered once by a gateway that honours the key, and `X-Sender-Run: <run id>`.
"""

from __future__ import annotations

import asyncio

from campaign_pipeline.channels.base import Channel
from campaign_pipeline.channels.delivery import (
    NotStarted,
    Outcome,
    Permanent,
    Refused,
    Retryable,
    each_message,
    retry_after_seconds,
    with_retries,
)
from campaign_pipeline.channels.pace import Pace, Window, limits
from campaign_pipeline.errors import PreflightError
from campaign_pipeline.privacy import mask_phone, scrub
from campaign_pipeline.secret_values import reference, secret, variable


def payload(message: dict) -> dict:
    return {
        "to": message["recipient"],
        "text": message["text"],
        "message_id": message["message_id"],
        "group_id": f"{message['campaign_id']}/{message['wave_id']}",
        "metadata": {
            "campaign_id": message["campaign_id"],
            "wave_id": message["wave_id"],
            "market_id": message["market_id"],
        },
    }


async def send_sms_async(
    messages: list[dict],
    url: str,
    token: str | None,
    pace: Pace,
    gate=None,
    spacing=None,
    window: Window | None = None,
    run_id: str | None = None,
) -> list[Outcome]:
    import aiohttp

    if gate is None or spacing is None:
        gate, spacing = limits(pace)
    window = window or Window()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if run_id:
        headers["X-Sender-Run"] = run_id
    timeout = aiohttp.ClientTimeout(total=pace.timeout_seconds)
    connector = aiohttp.TCPConnector(limit=pace.max_in_flight)
    endpoint = url.rstrip("/") + "/messages"

    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        def attempt(message: dict):
            hide = (message.get("code"),)

            async def once() -> str | None:
                async with gate:
                    await spacing.acquire()
                    if not window.open():
                        raise NotStarted
                    try:
                        async with session.post(
                            endpoint, json=payload(message), headers={"Idempotency-Key": message["message_id"]}
                        ) as resp:
                            body = await resp.text()
                            if 200 <= resp.status < 300:
                                try:
                                    data = await resp.json(content_type=None)
                                except ValueError:
                                    data = None
                                return str(data.get("id")) if isinstance(data, dict) and data.get("id") else None
                            if resp.status == 429 or resp.status >= 500:
                                raise Retryable(
                                    f"HTTP {resp.status}: {scrub(body, hide=hide)}",
                                    retry_after_seconds(resp.headers.get("Retry-After")),
                                )
                            if resp.status in (401, 403):
                                raise Refused(f"HTTP {resp.status}: {scrub(body, hide=hide)}")
                            raise Permanent(f"HTTP {resp.status}: {scrub(body, hide=hide)}")
                    except TimeoutError:
                        raise Retryable(f"TimeoutError after {pace.timeout_seconds:g} s") from None
                    except aiohttp.ClientError as exc:
                        raise Retryable(type(exc).__name__) from None

            return once

        return await each_message(
            messages,
            lambda m, waiting: with_retries(attempt(m), m["message_id"], pace, window, waiting),
            2 * pace.max_in_flight,  # the gate, not the workers, bounds requests in flight
        )


def send_sms(
    messages: list[dict], url: str, token: str | None, pace: Pace, window: Window | None = None
) -> list[Outcome]:
    """Send `messages` (wave_messages rows as dicts) and return one outcome per message."""
    if not messages:
        return []
    return asyncio.run(send_sms_async(messages, url, token, pace, window=window))


# ---------------------------------------------------------------- the channel
SMS_LINE_TYPES = ("mobile", "fixed_line_or_mobile")


def sms_possible(sms_countries: list[str]):
    """A valid mobile number in one of `sms_countries`, and the fan has not asked not to be texted."""
    from pyspark.sql import functions as F

    return (
        F.col("phone_e164").isNotNull()
        & F.coalesce(F.col("phone_type"), F.lit("")).isin(*SMS_LINE_TYPES)
        & F.coalesce(F.col("phone_country"), F.lit("")).isin(*sms_countries)
        & ~F.coalesce(F.col("do_not_text"), F.lit(False))
    )


def _too_long(campaign, subject, text, segments):
    from pyspark.sql import functions as F

    limit = campaign.messages.max_sms_segments
    return F.when(
        segments > limit,
        F.concat(
            F.lit("SMS of "), segments.cast("string"),
            F.lit(f" segments, more than messages.max_sms_segments ({limit})"),
        ),
    )  # fmt: skip


def _in_sms_countries(campaign):
    from pyspark.sql import functions as F

    return F.array_contains(F.lit(list(campaign.options.sms_countries)), F.col("phone_country"))


def gateway_problem(url: str, timeout: float) -> str | None:
    """None when the gateway answers HTTP at all (any status); else why not."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered: reachable
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the SMS gateway {url} does not answer ({type(reason).__name__}: {str(reason)[:120]})"


def _preflight(env, timeout: float) -> tuple[list[str], dict]:
    """The gateway URL is set and answers; the SMS token has a value (its variable or its Secrets
    Manager reference)."""
    problems: list[str] = []
    token = None
    if not env.sms_gateway_url:
        problems.append(f"environment {env.name} sets no sms_gateway_url")
    else:
        problem = gateway_problem(env.sms_gateway_url, timeout)
        if problem:
            problems.append(problem)
    try:
        token = secret(env, "sms_token")
    except PreflightError:
        raise
    except Exception as exc:  # noqa: BLE001 - a secret that cannot be read is one of the problems
        problems.append(str(exc))
    else:
        if not token:
            ref = reference(env, "sms_token")
            problems.append(
                f"no SMS token: set the variable {variable(env, 'sms_token')} (secrets.sms_token_env) or a "
                "Secrets Manager reference (secrets.sms_token_secret)" + (f"; {ref} gave none" if ref else "")
            )
    return problems, {"sms_token": token}


async def _send(sending) -> list[Outcome]:
    s = sending.senders
    return await send_sms_async(
        sending.messages, s.sms_url, s.sms_token, s.pace, sending.gate, sending.spacing, sending.window,
        s.run_id,
    )  # fmt: skip


SMS = Channel(
    name="sms",
    label="SMS",
    recipient="phone_e164",
    reachable=lambda campaign: sms_possible(campaign.options.sms_countries),
    text_template="sms",
    counts_segments=True,
    too_long=_too_long,
    rule=("_sms_in_sms_countries", _in_sms_countries),
    preflight=_preflight,
    send=_send,
    mask=mask_phone,
    export_folder="sms",
)

"""Before a wave is taken: can it be sent at all? One clear error instead of a wave of failures.

Checked for the channels the wave still has messages on: SMS → the gateway URL is set, the SMS
token has a value (its variable or its Secrets Manager reference), and the gateway answers HTTP
(any status: only a refused or timed-out connection fails); email → the queue URL is set and
SQS answers `GetQueueAttributes` for it. A failure raises `PreflightError` naming every problem;
the wave has not been claimed, so it stays as it was and no attempt of it is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from campaign_pipeline.errors import PreflightError
from campaign_pipeline.secret_values import reference, secret, variable


@dataclass(frozen=True)
class Ready:
    sms_token: str | None
    fifo: bool


def gateway_problem(url: str, timeout: float) -> str | None:
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


def queue_problem(env, timeout: float) -> tuple[str | None, bool]:
    from botocore.exceptions import BotoCoreError, ClientError

    from campaign_pipeline.notify.email import sqs_client

    try:
        client = sqs_client(env.aws_region, timeout=timeout)
        attributes = client.get_queue_attributes(QueueUrl=env.email_queue_url, AttributeNames=["FifoQueue"])
    except (BotoCoreError, ClientError) as exc:
        return f"the email queue {env.email_queue_url} does not answer ({type(exc).__name__}: {str(exc)[:160]})", False
    return None, attributes.get("Attributes", {}).get("FifoQueue") == "true"


def preflight(env, wave_id: str, channels: set[str]) -> Ready:
    """Raise `PreflightError` unless every channel the wave still has messages on can be sent."""
    problems: list[str] = []
    token, fifo = None, False
    timeout = env.notify.preflight_timeout_seconds
    if "sms" in channels:
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
    if "email" in channels:
        if not env.email_queue_url:
            problems.append(f"environment {env.name} sets no email_queue_url")
        else:
            problem, fifo = queue_problem(env, timeout)
            if problem:
                problems.append(problem)
    if problems:
        raise PreflightError(
            f"notify: {wave_id} cannot be sent, so it was not taken (it stays as it was, no attempt spent): "
            + "; ".join(problems)
        )
    return Ready(token, fifo)

"""Secrets at run time: from the process environment, else from AWS Secrets Manager by reference.

Each secret has a variable name (`secrets.<name>_env`, e.g. `SMS_API_TOKEN`). Its value is the
variable's, when set. Otherwise a reference is looked up — the variable `<NAME>_SECRET` in the
job's environment (what `submit` and `schedule apply` put in a cluster job's driver environment),
else `secrets.<name>_secret` in the environment config — and the value is read from Secrets
Manager (`GetSecretValue`, the secret's string) once per process. Values never go into a config
file, a job request, a log line or a Spark plan; references may.
"""

from __future__ import annotations

import os

from campaign_pipeline.errors import ConfigError

SECRETS = ("code_key", "sms_token", "slack_webhook")
_cache: dict[tuple[str, str], str] = {}


def variable(env, name: str) -> str:
    return getattr(env.secrets, f"{name}_env")


def reference(env, name: str) -> str | None:
    """The Secrets Manager id the secret `name` is read from when its variable is unset, if any."""
    return os.environ.get(f"{variable(env, name)}_SECRET") or getattr(env.secrets, f"{name}_secret")


def references(env) -> dict[str, str]:
    """`<NAME>_SECRET` → Secrets Manager id, for every secret with a reference: what a cluster job's
    driver environment is given (references only)."""
    return {f"{variable(env, n)}_SECRET": ref for n in SECRETS if (ref := reference(env, n))}


def secret(env, name: str) -> str | None:
    """The value of secret `name` (`code_key`, `sms_token`, `slack_webhook`), or None when it has
    neither a value in the environment nor a reference."""
    value = os.environ.get(variable(env, name))
    if value:
        return value
    ref = reference(env, name)
    if not ref:
        return None
    key = (ref, env.aws_region or "")
    if key not in _cache:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = boto3.client("secretsmanager", region_name=env.aws_region or "us-east-1")
            answer = client.get_secret_value(SecretId=ref)
        except (BotoCoreError, ClientError) as exc:
            raise ConfigError(
                f"secrets.{name}_secret: cannot read secret {ref} from AWS Secrets Manager "
                f"({type(exc).__name__}: {str(exc)[:200]}); {variable(env, name)} is not set either"
            ) from None
        text = answer.get("SecretString")
        if not text:
            raise ConfigError(f"secrets.{name}_secret: secret {ref} has no string value")
        _cache[key] = text
    return _cache[key]

"""Message templates in a Jinja2 sandbox: operators write them, so they can never reach Python internals.

Templates render in `jinja2.sandbox.SandboxedEnvironment` with strict undefined variables: an
attribute such as `__init__` or `__globals__` raises `SecurityError` instead of walking to
`os.environ`. An email body that contains HTML markup is rendered with autoescaping, so a fan's
name cannot inject markup; SMS texts and subjects are plain text. A template that fails in the
sandbox with sample values is a configuration error when the campaign is loaded.
"""

from __future__ import annotations

import re

VARIABLES = (
    "campaign_name",
    "artist",
    "market",
    "market_id",
    "event_date",
    "wave_date",
    "code",
    "link",
    "first_name",
    "last_name",
)
BUILTIN_TEMPLATES = {
    "sms": "{{ artist }}: your presale code for {{ market }} ({{ event_date }}) is {{ code }}. "
    "Presale opens {{ wave_date }}. {{ link }}",
    "email_subject": "Your {{ artist }} presale code",
    "email_body": "Hi {{ first_name }}, your presale code for {{ market }} on {{ event_date }} is {{ code }}. "
    "Presale opens {{ wave_date }}. {{ link }}",
}
_HTML = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")


def autoescaped(field: str, source: str) -> bool:
    """HTML email bodies are autoescaped; SMS texts, subjects and plain-text bodies are not."""
    return field == "email_body" and bool(_HTML.search(source))


def compile_template(field: str, source: str):
    """A sandboxed Jinja2 template for one template field."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=autoescaped(field, source), keep_trailing_newline=False
    )
    return env.from_string(source)


def literal_parts(field: str, source: str) -> list[tuple[str, str]] | None:
    """The template as ("text", literal) and ("var", name) parts when that is all it is, else None.

    A template made only of text and `{{ variable }}` outputs (no filter, test, block, call or
    expression) renders to its literal text with each variable's string value in place, escaped
    when the template is autoescaped; that is what lets plan_waves render it with Spark's own
    string functions instead of Jinja2 row by row. The parts come from Jinja2's own parser, so
    whitespace control (`{{-`) and the trailing-newline rule are already applied.
    """
    from jinja2 import nodes

    parts: list[tuple[str, str]] = []
    for node in compile_template(field, source).environment.parse(source).body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                parts.append(("text", child.data))
            elif isinstance(child, nodes.Name) and child.ctx == "load" and child.name in VARIABLES:
                parts.append(("var", child.name))
            else:
                return None
    return parts


def template_problem(field: str, source: str) -> str | None:
    """Why the template cannot be used (syntax, unknown variable, a sandbox violation), or None."""
    from jinja2 import TemplateError

    try:
        compile_template(field, source).render(**{v: f"<{v}>" for v in VARIABLES})
    except TemplateError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None

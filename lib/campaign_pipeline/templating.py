"""Message templates in a Jinja2 sandbox: operators write them, so they can never reach Python internals.

Templates render in `jinja2.sandbox.SandboxedEnvironment` with strict undefined variables: an
attribute such as `__init__` or `__globals__` raises `SecurityError` instead of walking to
`os.environ`. An email body that contains HTML markup is rendered with autoescaping, so a fan's
name cannot inject markup; SMS texts and subjects are plain text. A template that fails in the
sandbox with sample values is a configuration error when the campaign is loaded, whatever it
raises. The sandbox is also bounded (`render_bounded`): every loop counts against one budget of
steps per message, the output stops at a size, and widths and repeats a template asks for are
capped, so no template can make a worker spin or fill its memory.
"""

from __future__ import annotations

import contextvars
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


MAX_LOOP_STEPS = 20_000  # loop iterations per rendered message, all loops together
MAX_RENDER_CHARS = 1_000_000  # rendering stops beyond this (messages are capped far lower in config)
MAX_WIDTH = 1_000  # widths and repeat counts a template may ask for (`center`, `format`, `*`)
_LOOP_BUDGET = "__campaign_pipeline_loop_budget"


class TemplateLimitError(Exception):
    """A template asked for more than a message may take: loop steps, output size, widths."""


_steps: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("template_steps", default=None)


def _budgeted(iterable):
    """Every `{% for %}` iterates through this: each step spends one of the render's loop steps."""
    budget = _steps.get()
    if budget is None:  # rendered outside `render_bounded` (never in the pipeline): a budget of its own
        budget = [MAX_LOOP_STEPS]
    for item in iterable:
        budget[0] -= 1
        if budget[0] < 0:
            raise TemplateLimitError(f"more than {MAX_LOOP_STEPS:,} loop steps in one message")
        yield item


def _sized(value) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


def _bounded_environment_class():
    from jinja2 import nodes
    from jinja2.sandbox import SandboxedEnvironment, SecurityError

    class BoundedSandbox(SandboxedEnvironment):
        """Jinja2's sandbox, plus bounds on what a template can make a worker do: loop steps per
        message (every `{% for %}` goes through `_budgeted`), `*` and `**` on sizes, widths in
        `center`, `indent`, `format` and `str.format`."""

        intercepted_binops = frozenset({"*", "**"})

        def _parse(self, source, name, filename):
            tree = super()._parse(source, name, filename)
            for loop in tree.find_all(nodes.For):
                loop.iter = nodes.Call(nodes.Name(_LOOP_BUDGET, "load"), [loop.iter], [], None, None)
            return tree

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if _sized(seq) is not None and isinstance(n, int) and _sized(seq) * n > MAX_RENDER_CHARS:
                        raise SecurityError(f"a repeat of {n:,} × {_sized(seq):,} items is too large for a message")
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError(f"an exponent of {right} is too large for a message")
            return super().call_binop(context, operator, left, right)

        def wrap_str_format(self, value):
            wrapped = super().wrap_str_format(value)
            if wrapped is not None and re.search(r"\{[^{}]*:[^{}]*\d{4,}", str(getattr(value, "__self__", ""))):
                raise SecurityError(f"a format width above {MAX_WIDTH} is too large for a message")
            return wrapped

    return BoundedSandbox


def _width_checked(name: str, original, position: int):
    def checked(*args, **kwargs):
        width = kwargs.get("width", args[position] if len(args) > position else None)
        if isinstance(width, int) and abs(width) > MAX_WIDTH:
            raise TemplateLimitError(f"{name}: a width of {width:,} is above {MAX_WIDTH:,}")
        return original(*args, **kwargs)

    return checked


def _format_checked(original):
    def checked(value, *args, **kwargs):
        if re.search(r"%[-+ #0]*(\*|\d{4,})", str(value)):
            raise TemplateLimitError(f"format: widths above {MAX_WIDTH} (or `*`) are not allowed in a message")
        return original(value, *args, **kwargs)

    return checked


def compile_template(field: str, source: str):
    """A sandboxed, bounded Jinja2 template for one template field (render it with `render_bounded`)."""
    from jinja2 import StrictUndefined

    env = _bounded_environment_class()(
        undefined=StrictUndefined, autoescape=autoescaped(field, source), keep_trailing_newline=False
    )
    env.globals[_LOOP_BUDGET] = _budgeted
    env.filters["center"] = _width_checked("center", env.filters["center"], 1)
    env.filters["indent"] = _width_checked("indent", env.filters["indent"], 1)
    env.filters["format"] = _format_checked(env.filters["format"])
    return env.from_string(source)


def render_bounded(template, context: dict, max_chars: int = MAX_RENDER_CHARS) -> str:
    """Render with a fresh loop-step budget, stopping once the text passes `max_chars`."""
    token = _steps.set([MAX_LOOP_STEPS])
    try:
        parts, size = [], 0
        for piece in template.generate(context):
            size += len(piece)
            if size > max_chars:
                raise TemplateLimitError(f"the rendered text passes {max_chars:,} characters")
            parts.append(piece)
        return "".join(parts)
    finally:
        _steps.reset(token)


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
    """Why the template cannot be used, or None: it is rendered in the sandbox with sample values,
    and anything it raises (syntax, an unknown variable, a sandbox violation, a limit, `1/0`, a
    type error, runaway recursion) is the problem."""
    try:
        render_bounded(compile_template(field, source), {v: f"<{v}>" for v in VARIABLES})
    except Exception as exc:  # noqa: BLE001 - whatever a template raises is a config problem
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
    return None

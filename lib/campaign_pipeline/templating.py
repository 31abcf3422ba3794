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
import functools
import math
import re
import time

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
# GSM 03.38 basic character set, and the extension characters that take two septets.
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")
_HTML = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")


def sms_segments(text: str) -> tuple[int, str]:
    """(segments, encoding): GSM-7 when every character is in the GSM alphabet, else UCS-2."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        septets = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        return (1 if septets <= 160 else math.ceil(septets / 153)), "GSM-7"
    units = len(text.encode("utf-16-le")) // 2
    return (1 if units <= 70 else math.ceil(units / 67)), "UCS-2"


def autoescaped(field: str, source: str) -> bool:
    """HTML email bodies are autoescaped; SMS texts, subjects and plain-text bodies are not."""
    return field == "email_body" and bool(_HTML.search(source))


MAX_LOOP_STEPS = 20_000  # loop steps and calls per rendered message, all together
MAX_RENDER_CHARS = 1_000_000  # no string or list a message's template builds may be longer
MAX_RENDER_SECONDS = 2.0  # per message: a template that takes longer fails (a message takes microseconds)
MAX_BUILT_CHARS = 10_000_000  # all the strings and lists one message's template builds, together
MAX_SAMPLE_SECONDS = 0.25  # a template slower than this on sample values is refused at load
MAX_WIDTH = 1_000  # widths and precisions a template may ask for (`center`, `format`, `%`)
_LOOP_BUDGET = "__campaign_pipeline_loop_budget"
_CONCAT = "__campaign_pipeline_concat"
# Text methods a template may call on a string: none of them can make it longer than its input
# allows (`replace`, `join` and `format` are checked separately; `ljust`, `zfill`, ... are refused).
_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs", "encode"})
_WIDE = re.compile(r"%(\([^)]*\))?[-+ #0]*(\*|\d{4,})|%(\([^)]*\))?[-+ #0]*\d*\.(\*|\d{4,})")
_WIDE_BRACES = re.compile(r"\{[^{}]*:[^{}]*(\{|\d{4,})")


class TemplateLimitError(Exception):
    """A template asked for more than a message may take: steps, time, sizes, widths."""


class _Budget:
    def __init__(self):
        self.steps = MAX_LOOP_STEPS
        self.built = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def spend(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise TemplateLimitError(f"more than {MAX_LOOP_STEPS:,} loop steps and calls in one message")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering one message took more than {MAX_RENDER_SECONDS:g} s")

    def build(self, size: int) -> None:
        self.built += size
        if self.built > MAX_BUILT_CHARS:
            raise TemplateLimitError(f"one message built more than {MAX_BUILT_CHARS:,} characters and items in all")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _spend() -> None:
    _current().spend()  # outside `render_bounded` (never in the pipeline): a budget of its own


def _current() -> _Budget:
    budget = _budget.get()
    if budget is None:
        budget = _Budget()
        _budget.set(budget)
    return budget


def _size(value, depth: int = 0) -> int:
    """How much a value holds: characters of its strings and items of its containers, all the way
    down (a list of a million references to one long string is as large as its text would be)."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if depth > 8:
        return 1
    if isinstance(value, dict):
        return len(value) + sum(_size(k, depth + 1) + _size(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        if len(value) > MAX_RENDER_CHARS:
            return len(value)
        return len(value) + sum(_size(v, depth + 1) for v in value)
    return 0


def _check_size(value, what: str):
    size = _size(value)
    if size > MAX_RENDER_CHARS:
        raise TemplateLimitError(f"{what} built {size:,} characters and items, more than {MAX_RENDER_CHARS:,}")
    _current().build(size)
    return value


def _finalize(value):
    """Every `{{ … }}` output: refused before it is turned into text when it holds too much."""
    if not isinstance(value, str) and _size(value) > MAX_RENDER_CHARS:
        raise TemplateLimitError(f"an output of more than {MAX_RENDER_CHARS:,} characters and items")
    return value


def _budgeted(iterable):
    """Every `{% for %}` iterates through this: each step spends one of the render's steps."""
    for item in iterable:
        _spend()
        yield item


def _bounded_concat(*parts):
    """`a ~ b`: refused when the result would pass the size limit."""
    from jinja2.runtime import markup_join

    _spend()
    if sum(_size(p) if not isinstance(p, (int, float)) else 24 for p in parts) > MAX_RENDER_CHARS:
        raise TemplateLimitError(f"a `~` would build more than {MAX_RENDER_CHARS:,} characters")
    return _check_size(markup_join(parts), "a `~`")


def _wide_format(text) -> bool:
    return bool(_WIDE.search(str(text)))


def _bounded_environment_class():
    from jinja2 import nodes
    from jinja2.sandbox import SandboxedEnvironment, SecurityError
    from jinja2.visitor import NodeTransformer

    class Bound(NodeTransformer):
        """Loops iterate through `_budgeted`; `~` goes through `_bounded_concat`."""

        def visit_For(self, node):
            node = self.generic_visit(node)
            node.iter = nodes.Call(nodes.Name(_LOOP_BUDGET, "load"), [node.iter], [], None, None)
            return node

        def visit_Concat(self, node):
            node = self.generic_visit(node)
            return nodes.Call(nodes.Name(_CONCAT, "load"), list(node.nodes), [], None, None)

    class BoundedSandbox(SandboxedEnvironment):
        """Jinja2's sandbox, plus bounds on what a template can make a worker do: loop steps and
        calls per message, time per message, sizes of what it builds (`*`, `+`, `~`, `%`, `replace`,
        `join`, every filter's result), widths (`center`, `indent`, `format`, `%`, `str.format`);
        padding methods and `lipsum` are not available."""

        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def _parse(self, source, name, filename):
            return Bound().visit(super()._parse(source, name, filename))

        def call_binop(self, context, operator, left, right):
            _spend()
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if (
                        isinstance(seq, (str, bytes, list, tuple))
                        and isinstance(n, int)
                        and _size(seq) * n > MAX_RENDER_CHARS
                    ):
                        raise SecurityError(f"a repeat of {n:,} × {_size(seq):,} items is too large for a message")
                if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > 4096:
                    raise SecurityError("a product of that size is too large for a message")
            if operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
                if abs(right) > 64 or (isinstance(left, int) and left.bit_length() * abs(right) > 4096):
                    raise SecurityError(f"a power of {right} is too large for a message")
            if operator == "+" and _size(left) + _size(right) > MAX_RENDER_CHARS:
                raise SecurityError(f"a `+` would build more than {MAX_RENDER_CHARS:,} items")
            if operator == "%" and isinstance(left, str) and _wide_format(left):
                raise SecurityError(f"a format width or precision above {MAX_WIDTH} is too large for a message")
            return _check_size(super().call_binop(context, operator, left, right), f"`{operator}`")

        def is_safe_attribute(self, obj, attr, value):
            if isinstance(obj, str) and attr in _PADDING_METHODS:
                return False
            return super().is_safe_attribute(obj, attr, value)

        def wrap_str_format(self, value):
            wrapped = super().wrap_str_format(value)
            if wrapped is not None and _WIDE_BRACES.search(str(getattr(value, "__self__", ""))):
                raise SecurityError(f"a format width above {MAX_WIDTH} (or a nested one) is too large for a message")
            return wrapped

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja2's own signature
            _spend()
            owner = getattr(__obj, "__self__", None)
            name = getattr(__obj, "__name__", "")
            if isinstance(owner, str) and name == "replace" and len(args) >= 2:
                grows = max(0, len(str(args[1])) - len(str(args[0])))
                if len(owner) + owner.count(str(args[0])) * grows > MAX_RENDER_CHARS:
                    raise SecurityError("a replace that large is too large for a message")
            if isinstance(owner, str) and name == "join" and args:
                parts = list(args[0])
                if sum(len(str(p)) for p in parts) + len(owner) * len(parts) > MAX_RENDER_CHARS:
                    raise SecurityError("a join that large is too large for a message")
                args = (parts, *args[1:])
            return _check_size(super().call(__context, __obj, *args, **kwargs), f"a call of {name or 'a function'}")

    return BoundedSandbox


def _bounded_filter(name: str, original):
    @functools.wraps(original)
    def bounded(*args, **kwargs):
        _spend()
        values = [a for a in args if not hasattr(a, "environment") and not hasattr(a, "autoescape")]
        value = values[0] if values else None
        rest = values[1:]
        if value is not None and not isinstance(value, str) and _size(value) > MAX_RENDER_CHARS:
            raise TemplateLimitError(f"{name}: its input holds more than {MAX_RENDER_CHARS:,} characters and items")
        if name in ("center", "indent"):
            width = kwargs.get("width", rest[0] if rest else None)
            if (isinstance(width, int) and abs(width) > MAX_WIDTH) or (
                isinstance(width, str) and len(width) > MAX_WIDTH
            ):
                raise TemplateLimitError(f"{name}: a width above {MAX_WIDTH:,}")
        if name == "indent" and isinstance(value, str):
            width = kwargs.get("width", rest[0] if rest else 4)
            per_line = len(width) if isinstance(width, str) else int(width or 0)
            if len(value) + (value.count("\n") + 1) * per_line > MAX_RENDER_CHARS:
                raise TemplateLimitError("indent: the result would be too large for a message")
        if name == "format" and value is not None and _wide_format(value):
            raise TemplateLimitError(f"format: widths and precisions above {MAX_WIDTH} (or `*`) are not allowed")
        if name == "replace" and isinstance(value, str) and len(rest) >= 2:
            grows = max(0, len(str(rest[1])) - len(str(rest[0])))
            if len(value) + value.count(str(rest[0])) * grows > MAX_RENDER_CHARS:
                raise TemplateLimitError("replace: the result would be too large for a message")
        if name == "wordwrap" and isinstance(value, str):
            wrap = kwargs.get("wrapstring", rest[2] if len(rest) > 2 else None) or "\n"
            if len(value) * (1 + len(str(wrap))) > MAX_RENDER_CHARS:
                raise TemplateLimitError("wordwrap: the result could be too large for a message")
        if name == "join" and value is not None and not isinstance(value, str):
            value = list(value)
            separator = kwargs.get("d", rest[0] if rest else "")
            if sum(len(str(v)) for v in value) + len(str(separator)) * len(value) > MAX_RENDER_CHARS:
                raise TemplateLimitError("join: the result would be too large for a message")
            position = next(i for i, a in enumerate(args) if a is values[0])
            args = (*args[:position], value, *args[position + 1 :])
        return _check_size(original(*args, **kwargs), f"the filter {name}")

    return bounded


def compile_template(field: str, source: str):
    """A sandboxed, bounded Jinja2 template for one template field (render it with `render_bounded`)."""
    from jinja2 import StrictUndefined

    env = _bounded_environment_class()(
        undefined=StrictUndefined,
        autoescape=autoescaped(field, source),
        keep_trailing_newline=False,
        finalize=_finalize,
    )
    env.globals.pop("lipsum", None)
    env.globals[_LOOP_BUDGET] = _budgeted
    env.globals[_CONCAT] = _bounded_concat
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    return env.from_string(source)


def render_bounded(template, context: dict, max_chars: int = MAX_RENDER_CHARS) -> str:
    """Render with a fresh budget of steps and time, stopping once the text passes `max_chars`."""
    token = _budget.set(_Budget())
    try:
        parts, size = [], 0
        for piece in template.generate(context):
            size += len(piece)
            if size > max_chars:
                raise TemplateLimitError(f"the rendered text passes {max_chars:,} characters")
            parts.append(piece)
        return "".join(parts)
    except RecursionError:
        raise TemplateLimitError("the template recursed too deeply") from None
    finally:
        _budget.reset(token)


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
        template = compile_template(field, source)
        started = time.monotonic()
        render_bounded(template, {v: f"<{v}>" for v in VARIABLES})
        seconds = time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - whatever a template raises is a config problem
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
    if seconds > MAX_SAMPLE_SECONDS:
        return (
            f"TemplateLimitError: rendering it with sample values took {seconds:.2f} s; a message template must "
            f"render in well under {MAX_SAMPLE_SECONDS:g} s"
        )
    return None

"""User message templates (Jinja2, sandboxed): compiled once, rendered to bounded strings, never to JSON."""

from __future__ import annotations

import math
import re
import time
from collections.abc import ItemsView, KeysView, ValuesView
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace

from .formatting import classify_severity
from .model import FIRING, RESOLVED, Alert, Notification
from .safetext import cut_chars, one_line
from .timefmt import display_timestamp, duration_between, format_duration

# What one rendered part may be (code points); longer output is cut, not refused. The relay cuts further to
# its own display limits (e.g. attachments.MAX_TITLE_CHARS, 250); these only bound what a template can cost.
MAX_HEADLINE_CHARS = 1000  # one line of the top-level text, which Rocket.Chat keeps to 5000 UTF-16 units
MAX_TITLE_CHARS = 500
MAX_TEXT_CHARS = 8000
MAX_FIELD_TITLE_CHARS = 200
MAX_FIELD_VALUE_CHARS = 2000
MAX_FIELDS = 20  # per template
MAX_TEMPLATE_SOURCE_CHARS = 10_000  # per part, as written in the routes file

# One render's budget. Going over it is a TemplateRenderError (the alert gets the built-in layout).
MAX_LOOP_ITERATIONS = 10_000  # items taken from all for loops and range()s together, nested loops included
MAX_CALLS = 10_000  # filter, method and macro calls: bounds recursion that branches
MAX_VALUE_CHARS = 100_000  # the longest string or list one operation (*, +, ~, %, a filter, a call) may make
# The largest structure a template may build beyond what it was given, counted as printed: a list holding
# one list 1000 times counts it 1000 times (else [[1] * 100000] * 100000 prints 10^10 characters).
MAX_BUILT_WEIGHT = 100_000
MAX_WORK_CHARS = 2_000_000  # characters made, printed or read by text operations, all together
MAX_INT_BITS = 10_000  # integers made by *, ** and + (Python prints at most 4300 digits anyway)
MAX_RENDER_SECONDS = 0.5  # a backstop, checked at every loop item and call; the counts stop bombs in ms
# Label and annotation keys and values as templates see them (a 5 MiB body can carry a megabyte label).
MAX_CONTEXT_VALUE_CHARS = 20_000
MAX_ERROR_CHARS = 300  # of the reason in an error

_PART_CHARS = {"headline": MAX_HEADLINE_CHARS, "title": MAX_TITLE_CHARS, "text": MAX_TEXT_CHARS}
_TEMPLATE_KEYS = ("headline", "title", "text", "fields")
_FIELD_KEYS = ("title", "value")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_TEMPLATE_FILENAME = "<template>"  # what Jinja calls a from_string template in tracebacks
_LOOP_FILTER = "_loop_budget"  # put around every for loop's iterable at compile time
# Filters whose cost is in the number of items, not in the text of each (they do not print their input).
_SHALLOW_FILTERS = frozenset(
    "abs attr batch count d default dictsort first float groupby int items last length list map max min "
    "random reject rejectattr reverse round select selectattr slice sort sum unique".split()
)


class TemplateError(ValueError):
    """A templates section that cannot be used, naming the path (and line) of the problem."""


class TemplateRenderError(Exception):
    """A template failed on one alert or notification at run time: the caller uses the built-in layout."""

    def __init__(self, template: str, part: str, line: int | None, reason: str):
        self.template = template  # the template's name, e.g. "payments"
        self.part = part  # its path in the routes file, e.g. "templates.payments.fields[0].value"
        self.line = line  # in the part's source; None when unknown
        self.reason = reason  # one line, at most MAX_ERROR_CHARS
        super().__init__(f"{part}, line {line}: {reason}" if line else f"{part}: {reason}")


class _BudgetExceeded(Exception):
    """A render went over its budget (not a ValueError: filters such as int catch those)."""


# ---------------------------------------------------------------- the per-render budget


class _Budget:
    __slots__ = ("output_cap", "iterations_left", "calls_left", "work_left", "deadline", "max_weight", "weights")

    def __init__(self, output_cap: int):
        self.output_cap = output_cap
        self.iterations_left = MAX_LOOP_ITERATIONS
        self.calls_left = MAX_CALLS
        self.work_left = MAX_WORK_CHARS
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS
        self.max_weight = math.inf  # set once the context is weighed
        # id -> (container, weight) of the containers weighed in this render; holding them keeps ids unique.
        self.weights: dict[int, tuple[object, int]] = {}

    def spend(self, iterations: int = 0, calls: int = 0, chars: int = 0) -> None:
        self.iterations_left -= iterations
        self.calls_left -= calls
        self.work_left -= chars
        if self.iterations_left < 0:
            raise _BudgetExceeded(f"more than {MAX_LOOP_ITERATIONS} loop iterations")
        if self.calls_left < 0:
            raise _BudgetExceeded(f"more than {MAX_CALLS} calls")
        if self.work_left < 0:
            raise _BudgetExceeded(f"more than {MAX_WORK_CHARS} characters of work")
        if time.monotonic() > self.deadline:
            raise _BudgetExceeded(f"took longer than {MAX_RENDER_SECONDS} s")


# A context variable, so that renders in concurrent threads each see their own budget.
_BUDGET: ContextVar[_Budget | None] = ContextVar("rcwebhook_template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # Template.render() called directly, or constant folding at compile time
        raise _BudgetExceeded("templates render only through MessageTemplate")
    return budget


def _refuse_over(amount: float, what: str, limit: float = MAX_VALUE_CHARS) -> None:
    """Refuse, before doing it, an operation that would make more than limit."""
    if amount > limit:
        raise _BudgetExceeded(f"{what.format(amount)} is over the limit of {limit}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _DataDict(dict):
    """Context data (labels, an alert's variables): a dict that knows its weight, so weighing it is O(1)."""

    __slots__ = ("_weight",)


class _DataList(list):
    """Context data (the alerts): a list that knows its weight."""

    __slots__ = ("_weight",)


# Jinja names an object's type in errors ("'dict object' has no attribute 'x'"): keep the plain names there.
_DataDict.__module__ = _DataList.__module__ = "builtins"
_DataDict.__name__, _DataList.__name__ = "dict", "list"


_CONTAINERS = (list, tuple, dict, set, frozenset, KeysView, ValuesView, ItemsView)


def _size(value: object) -> int:
    """Characters or items of a value that costs memory; 0 for the rest."""
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) else 0


def _weight(value: object) -> int:
    """About how many characters str(value) makes, aliasing included; refused past the budget's max_weight."""
    kind = type(value)  # type() first: isinstance() on a namespace runs Python code
    if kind is str or kind is bytes:
        return len(value) + 1  # type: ignore[arg-type]
    if kind is _DataDict or kind is _DataList:
        return value._weight  # type: ignore[union-attr]
    if kind is int:
        return value.bit_length() // 3 + 1  # type: ignore[union-attr]
    if isinstance(value, (str, bytes)):  # Markup, from the safe filter
        return len(value) + 1
    if kind is _Namespace or not isinstance(value, _CONTAINERS):
        return 1  # scalars, Undefined, macros, namespaces (whose repr is fixed): a short repr
    budget = _budget()
    known = budget.weights.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    total = 1 + len(value)
    pairs = value.items() if isinstance(value, dict) else value if isinstance(value, ItemsView) else None
    children: Iterable = (side for pair in pairs for side in pair) if pairs is not None else value
    for child in children:
        total += _weight(child)
        _refuse_over(total, "a structure printing about {} characters", budget.max_weight)
    budget.weights[id(value)] = (value, total)
    return total


def _built(value: Any) -> Any:
    """A value an operation made: within MAX_VALUE_CHARS, MAX_INT_BITS and the weight limit, and charged."""
    size = _size(value)
    _refuse_over(size, "a value of {} characters or items")
    if _is_int(value):
        _refuse_over(value.bit_length(), "an integer of {} bits", MAX_INT_BITS)
    _weight(value)
    _budget().spend(chars=size)
    return value


class _CountedIterable:
    """An iterable whose every item is charged to the render's loop budget."""

    __slots__ = ("_values",)

    def __init__(self, values: Iterable):
        self._values = values

    def __iter__(self):
        budget = _budget()
        for item in self._values:
            budget.spend(iterations=1)
            yield item

    def __len__(self) -> int:
        return len(self._values)  # TypeError for an unsized iterable, as without the wrapper


class _BudgetedRange(_CountedIterable):
    """range() for templates: lazy, O(1) membership, every item taken charged.

    It has no length on purpose: list() and tuple() allocate len() slots before taking the first item,
    so list(range(10**9)) would take 8 GB before the budget could stop it.
    """

    __slots__ = ()

    def __len__(self) -> int:
        raise TypeError("range() has no length in message templates")

    def __bool__(self) -> bool:
        return bool(self._values)

    def __contains__(self, item: object) -> bool:
        return item in self._values

    def __getitem__(self, index: Any) -> Any:
        found = self._values[index]
        return _BudgetedRange(found) if isinstance(found, range) else found

    def __reversed__(self):
        return iter(_CountedIterable(reversed(self._values)))


def _budgeted_range(*args: int) -> _BudgetedRange:
    return _BudgetedRange(range(*args))


class _Namespace(Namespace):
    """namespace() with a fixed repr: its attributes may change, so its printed size must not depend on them."""

    def __repr__(self) -> str:
        return "<namespace>"


# ---------------------------------------------------------------- size checks made before an operation

# printf-style conversions, "%(name)-10.3f": a width or precision makes the result as long as it says.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(template: object, values: object) -> None:
    """Refuse a %-format whose widths or precisions ("%1000000000d", "%*d") would build a huge string."""
    if not isinstance(template, (str, bytes)):
        return
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    star = False
    for match in _PERCENT_SPEC.finditer(text):
        for number in match.groups():
            if number == "*":
                star = True
            elif number:
                _refuse_over(int(number) if len(number) <= 9 else 10**9, "a format width of {}")
    items = values if isinstance(values, tuple) else (values,)
    if star:
        for item in items:
            if _is_int(item):
                _refuse_over(abs(item), "a format width of {}")
    _budget().spend(chars=sum(_weight(item) for item in items))  # what the conversions will print


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse *, **, + and % whose result would pass MAX_VALUE_CHARS or MAX_INT_BITS, before computing it."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, (str, bytes, list, tuple)) and _is_int(times) and times > 0:
                _refuse_over(len(sequence) * times, "a repeated value of {} characters or items")
        if _is_int(left) and _is_int(right):
            _refuse_over(left.bit_length() + right.bit_length(), "a product of {} bits", MAX_INT_BITS)
    elif operator == "**":
        if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            _refuse_over(abs(left).bit_length() * right, "a power of {} bits", MAX_INT_BITS)
    elif operator == "+":
        if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
            _refuse_over(len(left) + len(right), "a concatenation of {} characters or items")
    elif operator == "%":
        _check_percent_format(left, right)


def _argument(args: tuple, kwargs: Mapping, position: int, name: str, default: Any) -> Any:
    return args[position] if len(args) > position else kwargs.get(name, default)


def _replaced_size(text: object, old: object, new: object, count: object) -> int:
    """The length of text.replace(old, new, count), computed without building it."""
    if not (isinstance(text, (str, bytes)) and isinstance(old, type(text)) and isinstance(new, type(text))):
        return 0
    occurrences = text.count(old) if old else len(text) + 1  # an empty old inserts between all characters
    if _is_int(count) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * (len(new) - len(old))


def _check_join(separator: object, items: list) -> None:
    """Refuse a join whose separators alone pass MAX_VALUE_CHARS; charge what it prints."""
    if isinstance(separator, (str, bytes)):
        _refuse_over(len(separator) * max(len(items) - 1, 0), "a join making {} characters")
    _budget().spend(chars=sum(_weight(item) for item in items))


def _guard_method_call(method: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Refuse str/bytes/int methods that grow (ljust, replace, join, to_bytes...) beyond the limits."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if isinstance(owner, (str, bytes)):
        if name == "expandtabs":
            tab_size = _argument(args, kwargs, 0, "tabsize", 8)
            if _is_int(tab_size):
                tab = "\t" if isinstance(owner, str) else b"\t"
                tabs = owner.count(tab)  # type: ignore[arg-type]
                _refuse_over(len(owner) + tabs * tab_size, "expanded tabs making {} characters")
        elif name == "replace":
            old, new = _argument(args, kwargs, 0, "old", ""), _argument(args, kwargs, 1, "new", "")
            size = _replaced_size(owner, old, new, _argument(args, kwargs, 2, "count", -1))
            _refuse_over(size, "a replacement making {} characters")
        elif name == "join" and args:
            items = list(args[0])  # a range() counts its own items
            _check_join(owner, items)
            args = (items, *args[1:])
    if isinstance(owner, (str, bytes, int, float)):  # ljust, center, zfill, to_bytes...: an int is a size
        for value in (*args, *kwargs.values()):
            if _is_int(value):
                _refuse_over(abs(value), "a size argument of {}")
    return args, kwargs


def _guard_filter(name: str, value: Any, args: tuple, kwargs: dict) -> Any:
    """The same checks for the built-in filters that take a size; returns the value to filter."""
    if name == "center":
        width = _argument(args, kwargs, 0, "width", 80)
        if _is_int(width):
            _refuse_over(width, "a width of {}")
    elif name == "indent":
        width = _argument(args, kwargs, 0, "width", 4)
        unit = width if _is_int(width) else len(str(width))
        text = str(value)
        _refuse_over(len(text) + (text.count("\n") + 1) * max(unit, 0), "an indented text of {} characters")
    elif name == "wordwrap":
        width = _argument(args, kwargs, 0, "width", 79)
        wrap = str(_argument(args, kwargs, 2, "wrapstring", None) or "\n")
        text = str(value)
        if _is_int(width) and width > 0:
            _refuse_over(len(text) + (len(text) // width + 1) * len(wrap), "a wrapped text of {} characters")
    elif name == "format":
        _check_percent_format(str(value), kwargs or args)
    elif name == "replace":
        old, new = str(_argument(args, kwargs, 0, "old", "")), str(_argument(args, kwargs, 1, "new", ""))
        size = _replaced_size(str(value), old, new, _argument(args, kwargs, 2, "count", None))
        _refuse_over(size, "a replacement making {} characters")
    elif name == "join":
        value = list(value)
        _check_join(str(_argument(args, kwargs, 0, "d", "")), value)
    elif name == "slice":
        slices = _argument(args, kwargs, 0, "slices", 0)
        if _is_int(slices):
            _refuse_over(slices, "{} slices", MAX_LOOP_ITERATIONS)
    elif name == "batch":
        line_count = _argument(args, kwargs, 0, "linecount", 0)
        if _is_int(line_count):
            _refuse_over(line_count, "a batch size of {}")
    elif name == "tojson":
        indent = _argument(args, kwargs, 0, "indent", None)
        if _is_int(indent):
            _refuse_over(indent, "a JSON indent of {}", 16)
    elif name == "sum":
        start = _argument(args, kwargs, 1, "start", 0)
        if not isinstance(start, (int, float)):  # sum(lists, start=[]) copies quadratically
            raise _BudgetExceeded("sum adds numbers only (use join for text)")
    return value


def _budgeted_filter(name: str, function: Any) -> Any:
    """A filter that charges the budget and checks its sizes and result (pass_context: never run at compile time)."""
    needs = getattr(getattr(function, "jinja_pass_arg", None), "name", None)
    shallow = name in _SHALLOW_FILTERS

    @jinja2.pass_context
    def budgeted(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        if shallow:
            budget.spend(calls=1, chars=_size(value))
        else:  # it prints its input and arguments
            budget.spend(calls=1, chars=_weight(value) + sum(_weight(arg) for arg in (*args, *kwargs.values())))
        value = _guard_filter(name, value, args, kwargs)
        if needs == "context":
            return _built(function(context, value, *args, **kwargs))
        if needs == "eval_context":
            return _built(function(context.eval_ctx, value, *args, **kwargs))
        if needs == "environment":
            return _built(function(context.environment, value, *args, **kwargs))
        return _built(function(value, *args, **kwargs))

    budgeted.__name__ = budgeted.__qualname__ = f"budgeted_{name}"
    return budgeted


def _counted(iterable: Any) -> _CountedIterable:
    return iterable if isinstance(iterable, _CountedIterable) else _CountedIterable(iterable)


@jinja2.pass_context
def _loop_budget(context: Any, iterable: Any) -> _CountedIterable:
    return _counted(iterable)


def _printed(value: Any) -> str:
    """str(value), its cost charged first when it is not already text."""
    if isinstance(value, str):
        return value
    _budget().spend(chars=_weight(value))
    return str(value)


@jinja2.pass_context
def _finalize(context: Any, value: Any) -> str:
    """Every {{ value }} printed: cut just past the part's cap (more could not be shown), and charged."""
    text = _printed(value)
    budget = _budget()
    if len(text) > budget.output_cap + 1:
        text = text[: budget.output_cap + 1]
    budget.spend(chars=len(text))
    return text


def _bounded_join(pieces: Iterable[str]) -> str:
    """environment.concat: the output of macros, {% set %} blocks and calls, bounded."""
    parts = list(pieces)
    _refuse_over(sum(map(len, parts)), "a block's output of {} characters")
    return _built("".join(parts))


# ---------------------------------------------------------------- filters for alerts


def _utc(value: Any) -> str:
    """An RFC 3339 (or Go) time as "2024-01-15 10:00:00 UTC"; "" when unset; as given when it does not parse."""
    return "" if isinstance(value, jinja2.Undefined) or value is None else display_timestamp(str(value))


def _duration(value: Any, end: Any = None) -> str:
    """Seconds as "1h 5m"; or the time between two times: start | duration(end), or [start, end] | duration."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and end is None:
        value, end = value
    if isinstance(value, jinja2.Undefined) or value is None or isinstance(value, bool):
        return ""
    if end is not None:
        return "" if isinstance(end, jinja2.Undefined) else duration_between(str(value), str(end))
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return ""
    return format_duration(int(seconds)) if math.isfinite(seconds) else ""


def _since(value: Any) -> str:
    """The time from a time until now, e.g. "2h 3m"; "" when unset, unparsable or in the future."""
    if isinstance(value, jinja2.Undefined) or value is None:
        return ""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return duration_between(str(value), now)


# ---------------------------------------------------------------- the environment


class _BudgetedCodeGenerator(CodeGenerator):
    """Jinja's code generator with every loop's items counted, "~" bounded and literal lists weighed."""

    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(
                loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.iter.lineno, environment=self.environment
            )
        super().visit_Template(node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        self.write("environment.bounded_concat((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")

    # [x, x], (x, x) and {k: x} build structures without any call: each is weighed as it is built.
    # Only loads: a tuple is also the target of "for a, b in" and "set a, b =".
    @optimizeconst
    def visit_Tuple(self, node: nodes.Tuple, frame: Any) -> None:
        self._weighed(super().visit_Tuple, node, frame)

    @optimizeconst
    def visit_List(self, node: nodes.List, frame: Any) -> None:
        self._weighed(super().visit_List, node, frame)

    @optimizeconst
    def visit_Dict(self, node: nodes.Dict, frame: Any) -> None:
        self._weighed(super().visit_Dict, node, frame)

    def _weighed(self, visit: Any, node: nodes.Node, frame: Any) -> None:
        if getattr(node, "ctx", "load") != "load":
            visit(node, frame)
            return
        self.write("environment.built(")
        visit(node, frame)
        self.write(")")


class _TemplateEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with operators, calls, loops and output all charged to a per-render budget."""

    code_generator_class = _BudgetedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    concat = staticmethod(_bounded_join)
    built = staticmethod(_built)

    def bounded_concat(self, values: tuple) -> str:
        """The "~" operator."""
        return _bounded_join([_printed(value) for value in values])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _built(super().call_binop(context, operator, left, right))

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        budget = _budget()
        budget.spend(calls=1)
        # A macro's varargs are built from its arguments: m(varargs, varargs) would double them at each call.
        weight = sum(_weight(arg) for arg in (*args, *kwargs.values()))
        _refuse_over(weight, "arguments printing about {} characters", budget.max_weight)
        if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (_counted(args[0]), *args[1:])
        args, kwargs = _guard_method_call(obj, args, kwargs)
        return _built(super().call(context, obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        # labels.values is the label called "values" when there is one, not the dict method.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        return _built(value) if isinstance(argument, slice) else value

    def wrap_str_format(self, value: Any) -> Any:
        # "{:>1000000000}".format(x) pads before anything could check it; the format filter is guarded.
        if super().wrap_str_format(value) is None:
            return None

        def refused(*args: Any, **kwargs: Any) -> str:
            raise SecurityError("str.format is not available in message templates; use the format filter")

        return refused


_ENVIRONMENT: list[_TemplateEnvironment] = []


def _environment() -> _TemplateEnvironment:
    """The one environment, built on first use (read-only afterwards, so threads share it)."""
    if not _ENVIRONMENT:
        environment = _TemplateEnvironment(
            undefined=jinja2.ChainableUndefined,
            autoescape=False,  # chat Markdown, not HTML; the relay neutralises mentions afterwards
            finalize=_finalize,
            trim_blocks=True,  # a {% ... %} line leaves no blank line in a multi-line YAML template
            lstrip_blocks=True,
        )
        filters = dict(environment.filters, utc=_utc, duration=_duration, since=_since)
        environment.filters = {name: _budgeted_filter(name, function) for name, function in filters.items()}
        environment.filters[_LOOP_FILTER] = _loop_budget
        environment.globals["range"] = _budgeted_range
        environment.globals["namespace"] = _Namespace
        environment.globals.pop("lipsum", None)  # lipsum(n=10**6) writes megabytes
        _ENVIRONMENT.append(environment)
    return _ENVIRONMENT[0]


# ---------------------------------------------------------------- compiled templates


@dataclass(frozen=True)
class CompiledPart:
    """One part of a template, compiled, with its place in the routes file and its output cap."""

    template_name: str  # e.g. "payments"
    path: str  # e.g. "templates.payments.title"
    source: str
    max_chars: int
    template: jinja2.Template

    def render(self, context: Mapping) -> str:
        """The part rendered on context, stripped and cut to max_chars; TemplateRenderError when it fails."""
        budget = _Budget(self.max_chars)
        token = _BUDGET.set(budget)
        pieces: list[str] = []
        length = 0
        stream = None
        try:
            budget.max_weight = MAX_BUILT_WEIGHT + sum(_weight(value) for value in context.values())
            stream = self.template.generate(context)
            for piece in stream:
                pieces.append(piece)
                length += len(piece)
                if length > self.max_chars:  # nothing more could be shown
                    break
        except Exception as error:  # noqa: BLE001 - RecursionError, MemoryError, the budget, a filter: all alike
            raise TemplateRenderError(self.template_name, self.path, _template_line(error), _reason(error)) from None
        finally:
            if stream is not None:
                stream.close()
            _BUDGET.reset(token)
        return cut_chars("".join(pieces).strip(), self.max_chars)


@dataclass(frozen=True)
class RenderedAlertParts:
    """What a template gives one alert: None for a part it does not set; fields with an empty side dropped."""

    title: str | None
    text: str | None
    fields: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MessageTemplate:
    """A named template: parts that replace parts of the relay's message."""

    name: str
    headline: CompiledPart | None = None  # per notification
    title: CompiledPart | None = None  # per alert: the attachment title
    text: CompiledPart | None = None  # per alert: replaces the built-in summary and description
    fields: tuple[tuple[CompiledPart, CompiledPart], ...] = ()  # per alert, after the built-in fields

    def render_headline(self, context: Mapping) -> str | None:
        """The headline on a notification_context; None when the template has none."""
        return None if self.headline is None else self.headline.render(context)

    def render_alert_parts(self, context: Mapping) -> RenderedAlertParts:
        """Title, text and fields on an alert_context; TemplateRenderError when any of them fails."""
        title = None if self.title is None else self.title.render(context)
        text = None if self.text is None else self.text.render(context)
        fields = []
        for title_part, value_part in self.fields:
            field_title, field_value = title_part.render(context), value_part.render(context)
            if field_title and field_value:  # Rocket.Chat refuses a field without both
                fields.append((field_title, field_value))
        return RenderedAlertParts(title=title, text=text, fields=tuple(fields))


def _template_line(error: BaseException) -> int | None:
    """The line of the innermost template frame of the error (Jinja rewrites tracebacks to source lines)."""
    line = None
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _reason(error: BaseException) -> str:
    """The error in one short line (it may quote a label value)."""
    text = one_line(str(error))
    if not text or isinstance(error, (RecursionError, MemoryError)):
        text = f"{type(error).__name__}: {text}".rstrip(": ")
    if isinstance(error, jinja2.UndefinedError):  # printing a missing label is fine; using it in an operation is not
        text = f"{cut_chars(text, MAX_ERROR_CHARS - 60)} (if it may be missing, use | default(...))"
    return cut_chars(text, MAX_ERROR_CHARS)


# ---------------------------------------------------------------- compiling a templates section


def compile_templates(spec: Mapping[str, object], *, where: str = "templates") -> dict[str, MessageTemplate]:
    """Every template of a routes file's templates section: validated, compiled, and tried on a sample alert."""
    if not isinstance(spec, Mapping):
        raise TemplateError(f"{where} must be a mapping of template names to templates")
    notification, alert = _sample()
    headline_context = notification_context(
        notification, notification.alerts, integration="sample", severity_label="severity"
    )
    alert_vars = alert_context(
        alert, notification, integration="sample", severity_label="severity", base_context=headline_context
    )
    compiled = {}
    for name, body in spec.items():
        if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
            shown = cut_chars(str(name), 60)
            raise TemplateError(f"{where}: template name {shown!r} may have only letters, digits, _ and -")
        template = _compile_template(name, body, f"{where}.{name}")
        for part in (template.title, template.text, *(side for pair in template.fields for side in pair)):
            if part is not None:
                _try(part, alert_vars)
        if template.headline is not None:
            _try(template.headline, headline_context)
        compiled[name] = template
    return compiled


def _compile_template(name: str, body: object, path: str) -> MessageTemplate:
    expected = ", ".join(_TEMPLATE_KEYS)
    if not isinstance(body, Mapping):
        raise TemplateError(f"{path} must be a mapping with any of: {expected}")
    unknown = sorted(str(key) for key in body if key not in _TEMPLATE_KEYS)
    if unknown:
        raise TemplateError(f"{path}.{unknown[0]}: unknown key; expected any of: {expected}")
    if not body:
        raise TemplateError(f"{path} sets no part; give any of: {expected}")
    parts = {
        key: _compile_part(name, body[key], f"{path}.{key}", max_chars)
        for key, max_chars in _PART_CHARS.items()
        if key in body
    }
    fields = body.get("fields", [])
    if not isinstance(fields, list):
        raise TemplateError(f"{path}.fields must be a list of {{title: ..., value: ...}}")
    if len(fields) > MAX_FIELDS:
        raise TemplateError(f"{path}.fields has {len(fields)} fields; the limit is {MAX_FIELDS}")
    compiled_fields = []
    for index, field in enumerate(fields):
        place = f"{path}.fields[{index}]"
        if not isinstance(field, Mapping):
            raise TemplateError(f"{place} must be a mapping with title and value")
        unknown = sorted(str(key) for key in field if key not in _FIELD_KEYS)
        if unknown:
            raise TemplateError(f"{place}.{unknown[0]}: unknown key; expected title and value")
        missing = [key for key in _FIELD_KEYS if key not in field]
        if missing:
            raise TemplateError(f"{place}.{missing[0]} is missing")
        compiled_fields.append(
            (
                _compile_part(name, field["title"], f"{place}.title", MAX_FIELD_TITLE_CHARS),
                _compile_part(name, field["value"], f"{place}.value", MAX_FIELD_VALUE_CHARS),
            )
        )
    return MessageTemplate(name=name, fields=tuple(compiled_fields), **parts)


def _compile_part(name: str, source: object, path: str, max_chars: int) -> CompiledPart:
    if not isinstance(source, str) or not source.strip():
        raise TemplateError(f"{path} must be a non-empty string (a Jinja template)")
    if len(source) > MAX_TEMPLATE_SOURCE_CHARS:
        raise TemplateError(f"{path} is {len(source)} characters long; the limit is {MAX_TEMPLATE_SOURCE_CHARS}")
    try:
        template = _environment().from_string(source)
    except jinja2.TemplateSyntaxError as error:
        reason = cut_chars(one_line(error.message or ""), MAX_ERROR_CHARS)
        raise TemplateError(f"{path}, line {error.lineno}: {reason}") from None
    except Exception as error:  # noqa: BLE001 - e.g. RecursionError on thousands of nested brackets
        raise TemplateError(f"{path}: cannot be compiled: {_reason(error)}") from None
    return CompiledPart(template_name=name, path=path, source=source, max_chars=max_chars, template=template)


def _try(part: CompiledPart, context: Mapping) -> None:
    try:
        part.render(context)
    except TemplateRenderError as error:
        line = f", line {error.line}" if error.line else ""
        raise TemplateError(f"{part.path}{line}: fails on a sample alert: {error.reason}") from None


def _sample() -> tuple[Notification, Alert]:
    """A typical firing alert, to try templates on at start-up."""
    labels = {"alertname": "SampleAlert", "severity": "critical", "instance": "host-1:9100", "job": "node"}
    alert = Alert(
        index=0,
        status=FIRING,
        labels=labels,
        annotations={"summary": "Sample summary", "description": "Sample description"},
        starts_at="2024-01-15T10:00:00Z",
        ends_at="0001-01-01T00:00:00Z",
        generator_url="http://prometheus.example/graph",
        fingerprint="0123456789abcdef",
    )
    notification = Notification(
        alerts=(alert,),
        status=FIRING,
        receiver="sample",
        group_labels={"alertname": "SampleAlert"},
        common_labels=labels,
        common_annotations={"summary": "Sample summary"},
        external_url="http://alertmanager.example",
    )
    return notification, alert


# ---------------------------------------------------------------- what templates see


def _cut(text: str) -> str:
    return cut_chars(str(text), MAX_CONTEXT_VALUE_CHARS)


def _data_dict(items: Mapping) -> _DataDict:
    """A dict of context data (keys are strings), weighed once for all the renders that share it."""
    data = _DataDict(items)
    data._weight = 1 + len(data) + sum(len(key) + 1 + _data_weight(value) for key, value in data.items())
    return data


def _data_weight(value: object) -> int:
    if isinstance(value, (_DataDict, _DataList)):
        return value._weight
    return len(value) + 1 if isinstance(value, str) else 1


def _strings(mapping: Mapping) -> _DataDict:
    """A copy of labels or annotations: a dict of strings, keys and values cut to MAX_CONTEXT_VALUE_CHARS."""
    return _data_dict({_cut(key): _cut(value) for key, value in mapping.items()})


def _alert_vars(alert: Alert, severity_label: str) -> dict:
    return {
        "labels": _strings(alert.labels),
        "annotations": _strings(alert.annotations),
        "status": alert.status,
        "starts_at": _cut(alert.starts_at),
        "ends_at": _cut(alert.ends_at),
        "severity": classify_severity(alert.labels, severity_label),
        "generator_url": _cut(alert.generator_url),
        "fingerprint": _cut(alert.fingerprint),
    }


def notification_context(
    notification: Notification, alerts: Sequence[Alert], *, integration: str, severity_label: str
) -> dict:
    """The variables of a headline: the message's alerts and the notification's group context.

    status is "firing" when any of these alerts fires, else "resolved" (a message may carry part of a group).
    """
    if alerts:
        status = FIRING if any(alert.status == FIRING for alert in alerts) else RESOLVED
    else:
        status = notification.status
    alert_list = _DataList(_data_dict(_alert_vars(alert, severity_label)) for alert in alerts)
    alert_list._weight = 1 + len(alert_list) + sum(item._weight for item in alert_list)
    return {
        "alerts": alert_list,
        "status": status,
        "group_labels": _strings(notification.group_labels),
        "common_labels": _strings(notification.common_labels),
        "common_annotations": _strings(notification.common_annotations),
        "external_url": _cut(notification.external_url),
        "receiver": _cut(notification.receiver),
        "integration": _cut(integration),
    }


def alert_context(
    alert: Alert,
    notification: Notification,
    *,
    integration: str,
    severity_label: str,
    base_context: Mapping | None = None,
) -> dict:
    """The variables of an alert's parts: the notification's, then the alert's own (its status wins).

    base_context is the message's notification_context: passing it makes a message of n alerts cost O(n),
    and alerts are then the message's; without it they are all of the notification's alerts.
    """
    if base_context is None:
        base_context = notification_context(
            notification, notification.alerts, integration=integration, severity_label=severity_label
        )
    return {**base_context, **_alert_vars(alert, severity_label)}

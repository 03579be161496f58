"""The bounded sandbox user templates render in: every loop item, call, operator and printed character is charged.

A render gets a fresh budget (counts of loop items, calls and characters of work, and a wall-clock backstop);
operations that would build a huge value are refused before they run, and what a template builds is weighed.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import ItemsView, KeysView, ValuesView
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Mapping

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace

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

_LOOP_FILTER = "_loop_budget"  # put around every for loop's iterable at compile time
# Filters whose cost is in the number of items, not in the text of each (they do not print their input).
_SHALLOW_FILTERS = frozenset(
    "abs attr batch count d default dictsort first float groupby int items last length list map max min "
    "random reject rejectattr reverse round select selectattr slice sort sum unique".split()
)


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


def render_bounded(template: jinja2.Template, context: Mapping, output_cap: int) -> str:
    """The template's output on context, on a fresh budget, cut once it passes output_cap; raises what fails."""
    budget = _Budget(output_cap)
    token = _BUDGET.set(budget)
    pieces: list[str] = []
    length = 0
    stream = None
    try:
        budget.max_weight = MAX_BUILT_WEIGHT + sum(_weight(value) for value in context.values())
        stream = template.generate(context)
        for piece in stream:
            pieces.append(piece)
            length += len(piece)
            if length > output_cap:  # nothing more could be shown
                break
    finally:
        if stream is not None:
            stream.close()
        _BUDGET.reset(token)
    return "".join(pieces)


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


def data_dict(items: Mapping) -> _DataDict:
    """A dict of context data (keys are strings), weighed once for all the renders that share it."""
    data = _DataDict(items)
    data._weight = 1 + len(data) + sum(len(key) + 1 + _data_weight(value) for key, value in data.items())
    return data


def data_list(items: Iterable) -> _DataList:
    """A list of context data, weighed once for all the renders that share it."""
    data = _DataList(items)
    data._weight = 1 + len(data) + sum(_data_weight(item) for item in data)
    return data


def _data_weight(value: object) -> int:
    if isinstance(value, (_DataDict, _DataList)):
        return value._weight
    return len(value) + 1 if isinstance(value, str) else 1


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


class TemplateEnvironment(ImmutableSandboxedEnvironment):
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


def bounded_environment(filters: Mapping[str, Callable], **options: Any) -> TemplateEnvironment:
    """The sandbox with Jinja's filters and these, each charged to the budget; options go to Jinja."""
    environment = TemplateEnvironment(finalize=_finalize, **options)
    filters = dict(environment.filters, **filters)
    environment.filters = {name: _budgeted_filter(name, function) for name, function in filters.items()}
    environment.filters[_LOOP_FILTER] = _loop_budget
    environment.globals["range"] = _budgeted_range
    environment.globals["namespace"] = _Namespace
    environment.globals.pop("lipsum", None)  # lipsum(n=10**6) writes megabytes
    return environment

"""Tests for incrcell.analysis: static cell analysis and runtime expansion."""

from __future__ import annotations

import functools
import textwrap

import pytest

from incrcell.analysis import (
    DYNAMIC_BUILTINS,
    analyse_cell,
    code_globals,
    expand_through_callables,
    referenced_globals,
)

ANN = "__annotations__"

# (source, reads, writes, mutates)
CASES = [
    # ---- statement order
    pytest.param("x = 1\ny = x", "", "x y", "", id="bind-then-read"),
    pytest.param("y = x\nx = 1", "x", "x y", "", id="read-then-bind"),
    pytest.param("x = x + 1", "x", "x", "", id="self-reference"),
    pytest.param("a = b = f()", "f", "a b", "", id="chained-assign"),
    pytest.param("a, (b, *c) = d", "d", "a b c", "", id="destructuring"),
    pytest.param("[a, b] = c\nprint(a)", "c print", "a b", "", id="list-target"),
    pytest.param("global x\nx = 1", "", "x", "", id="top-level-global-noop"),
    # ---- branches and loops: bindings inside are not definite afterwards
    pytest.param("if c:\n    x = 1\nprint(x)", "c print x", "x", "", id="if-no-else"),
    pytest.param(
        "if c:\n    x = 1\nelse:\n    x = 2\nprint(x)", "c print", "x", "", id="if-else-both-bind"
    ),
    pytest.param(
        "if c:\n    print(x)\nelse:\n    x = 1", "c print x", "x", "", id="read-in-other-branch"
    ),
    pytest.param(
        "for i in r:\n    x = i\nprint(x, i)", "r print x i", "i x", "", id="for-not-definite"
    ),
    pytest.param(
        "for i in r:\n    print(x)\n    x = i", "r print x", "i x", "", id="for-read-before-bind"
    ),
    pytest.param(
        "for i in r:\n    x = i\n    print(x)", "r print", "i x", "", id="for-bind-then-read"
    ),
    pytest.param(
        "while n:\n    n = n - 1\n    y = n\nelse:\n    z = 1\nprint(y, z)",
        "n print y z",
        "n y z",
        "",
        id="while-else",
    ),
    pytest.param(
        "try:\n    x = f()\nexcept E as e:\n    print(e)\n    x = 0\nprint(x)",
        "f E print",  # every path that completes binds x
        "x e",
        "",
        id="try-except-both-bind",
    ),
    pytest.param(
        "try:\n    x = f()\nexcept E:\n    pass\nprint(x)", "f E print x", "x", "", id="try-except"
    ),
    pytest.param(
        "try:\n    x = 1\nexcept E:\n    x = 2\nelse:\n    y = x\nprint(x, y)",
        "E print y",
        "x y",
        "",
        id="try-else",
    ),
    pytest.param(
        "try:\n    x = f()\nfinally:\n    y = x", "f x", "x y", "", id="finally-after-partial-body"
    ),
    pytest.param(
        "try:\n    x = 1\nfinally:\n    y = 2\nprint(y)", "print", "x y", "", id="finally-definite"
    ),
    pytest.param(
        "try:\n    f()\nexcept E as e:\n    pass\nprint(e)",
        "f E print e",
        "e",
        "",
        id="except-name-unbound-after",
    ),
    pytest.param(
        "try:\n    pass\nexcept (E1, E2) as err:\n    raise Wrapped(err)",
        "E1 E2 Wrapped",
        "err",
        "",
        id="except-tuple",
    ),
    pytest.param(
        "with open(p) as fh:\n    data = fh.read()\nprint(data)",
        "open p print data",
        "fh data",
        "",
        id="with-as",
    ),
    pytest.param("with a() as x, b(x) as y:\n    pass", "a b", "x y", "", id="with-multiple-items"),
    pytest.param(
        "with suppress(KeyError):\n    v = d['k']\nprint(v)",
        "suppress KeyError d print v",
        "v",
        "",
        id="with-suppress",
    ),
    # ---- augmented assignment
    pytest.param("x += 1", "x", "x", "x", id="augassign-name"),
    pytest.param("x = []\nx += [1]", "", "x", "", id="augassign-own-value"),
    pytest.param("x.a += 1", "x", "", "x", id="augassign-attr"),
    pytest.param("x[i] += 1", "x i", "", "x", id="augassign-subscript"),
    pytest.param("x.a.b[1] += 2", "x", "", "x", id="augassign-chain"),
    # ---- annotations
    pytest.param("x: int = 1", f"int {ANN}", f"x {ANN}", ANN, id="annassign"),
    pytest.param("x: int", f"int {ANN}", ANN, ANN, id="bare-annotation"),
    pytest.param("x.a: T = v", "T v x", "", "x", id="annassign-attr"),
    # ---- in-place mutation
    pytest.param("x.a = 1", "x", "", "x", id="attr-assign"),
    pytest.param("x[0] = 1", "x", "", "x", id="subscript-assign"),
    pytest.param("x.a.b[i] = v", "v x i", "", "x", id="chain-assign"),
    pytest.param("x.append(1)", "x", "", "x", id="method-call"),
    pytest.param("x.a.update(d)", "x d", "", "x", id="nested-method-call"),
    pytest.param("x[0].f()", "x", "", "x", id="subscript-method-call"),
    pytest.param("x.f().g()", "x", "", "x", id="call-chain"),
    pytest.param("df = df.drop(columns=['a'])", "df", "df", "df", id="df-drop"),
    pytest.param("f(x)", "f x", "", "", id="plain-call-no-mutation"),
    pytest.param("np.random.seed(0)", "np", "", "np", id="module-call"),
    pytest.param("x = []\nx.append(1)", "", "x", "", id="mutate-own-value"),
    pytest.param("y = x[0].a", "x", "y", "", id="load-no-mutation"),
    pytest.param("a, *b.c = d", "d b", "a", "b", id="starred-attr-target"),
    pytest.param("for o.i in r:\n    pass", "r o", "", "o", id="for-attr-target"),
    pytest.param("with cm() as d[k]:\n    pass", "cm d k", "", "d", id="with-subscript-target"),
    # ---- del
    pytest.param("del x", "", "x", "", id="del-name"),
    pytest.param("del x[0]", "x", "", "x", id="del-subscript"),
    pytest.param("del x.a, y", "x", "y", "x", id="del-attr-and-name"),
    pytest.param("x = 1\ndel x\nprint(x)", "print x", "x", "", id="del-unbinds"),
    # ---- imports
    pytest.param("import a.b.c", "", "a", "", id="import-dotted"),
    pytest.param("import a.b as c", "", "c", "", id="import-as"),
    pytest.param("from a.b import c as d, e", "", "d e", "", id="from-import"),
    pytest.param("from . import x\nfrom .m import y", "", "x y", "", id="relative-import"),
    pytest.param("import os\nos.getcwd()", "", "os", "", id="import-then-use"),
    # ---- def: signature is immediate, body deferred
    pytest.param(
        "def f(x: T = d, *, k=kd) -> R:\n    return g", "T d kd R", "f", "", id="def-signature"
    ),
    pytest.param("def f():\n    return x", "", "f", "", id="def-body-deferred"),
    pytest.param("def f():\n    return x\nf()", "x", "f", "", id="def-called"),
    pytest.param("def f():\n    return x\nx = 1\nf()", "", "f x", "", id="def-called-after-bind"),
    pytest.param("def f():\n    return x\nf()\nx = 1", "x", "f x", "", id="def-called-before-bind"),
    pytest.param(
        "x = 1\ndef f():\n    return x\nprint(f())", "print", "x f", "", id="def-reads-cell-value"
    ),
    pytest.param(
        "def g():\n    return y\ndef f():\n    return g()\nf()", "y", "f g", "", id="def-transitive"
    ),
    pytest.param(
        "def f(n):\n    return g(n) + a\ndef g(n):\n    return f(n - 1) + b\nprint(f(3))",
        "print a b",
        "f g",
        "",
        id="def-mutual-recursion",
    ),
    pytest.param(
        "def key(v):\n    return w[v]\nsorted(xs, key=key)",
        "sorted xs w",
        "key",
        "",
        id="def-passed-as-argument",
    ),
    pytest.param(
        "@dec(a)\ndef f():\n    return g", "dec a g", "f", "", id="decorated-def-pulled-in"
    ),
    pytest.param(
        "def f():\n    global counter\n    counter += 1\nf()",
        "counter",
        "f counter",
        "counter",
        id="global-in-called-def",
    ),
    pytest.param(
        "def f():\n    global counter\n    counter = 1", "", "f", "", id="global-in-uncalled-def"
    ),
    pytest.param("def f():\n    log.append(1)\nf()", "log", "f", "log", id="def-mutates-global"),
    pytest.param(
        "def f(a, *args, b=1, **kw):\n    c = a + b\n    for d in args:\n        pass\n"
        "    import os\n    return c, d, kw, os\nf(1)",
        "",
        "f",
        "",
        id="def-locals-not-reads",
    ),
    pytest.param(
        "def f():\n    n = 0\n    def inc():\n        nonlocal n\n        n += 1\n        return m\n"
        "    return inc\nf()",
        "m",
        "f",
        "",
        id="nested-def-nonlocal",
    ),
    pytest.param(
        "def f():\n    print(x)\n    x = 1\nf()", "print", "f", "", id="def-local-shadows-global"
    ),
    pytest.param(
        "def f():\n    v = 1\n    class B:\n        w = v\n        u = t\n    return B\nf()",
        "t",
        "f",
        "",
        id="class-inside-def",
    ),
    pytest.param(
        "def f():\n    return [i + j for i in r]\nf()",
        "r j",
        "f",
        "",
        id="comprehension-inside-def",
    ),
    pytest.param(
        "async def f():\n    return await g(h)\nawait f()", "g h", "f", "", id="async-def"
    ),
    pytest.param(
        "for i in range(2):\n    if i:\n        f()\n    def f():\n        return z",
        "range f z",
        "i f",
        "",
        id="def-used-in-loop-before-def",
    ),
    pytest.param(
        "if c:\n    def f():\n        return z\nf()", "c f z", "f", "", id="def-in-branch"
    ),
    pytest.param(
        "def f():\n    return a\nf()\ndef f():\n    return b",
        "a b",
        "f",
        "",
        id="redefinition-union",
    ),
    # ---- classes
    pytest.param(
        "class A:\n    y = z\n    w = y\n    def m(self):\n        return q",
        "z",
        "A",
        "",
        id="class-body-vs-method",
    ),
    pytest.param(
        "@dataclass\nclass P(Base, metaclass=M):\n    x: int = 0\n    def m(self):\n        return q",
        "dataclass Base M int q",
        "P",
        "",
        id="class-decorators-bases-keywords",
    ),
    pytest.param(
        "class A:\n    def m(self):\n        return q\nA().m()", "q", "A", "", id="class-used-later"
    ),
    pytest.param(
        "class A:\n    if c:\n        x = 1\n    y = x",
        "c x",
        "A",
        "",
        id="class-load-name-fallback",
    ),
    pytest.param(
        "class A:\n    n = 3\n    sq = [n * i for i in range(3)]",
        "range n",
        "A",
        "",
        id="class-comprehension-scope",
    ),
    pytest.param(
        "class A:\n    k = 1\n    def m(self):\n        return k\nA().m()",
        "k",
        "A",
        "",
        id="method-skips-class-scope",
    ),
    pytest.param(
        "class A:\n    @property\n    def p(self):\n        return cfg",
        "property cfg",
        "A",
        "",
        id="decorated-method",
    ),
    pytest.param("class A:\n    global g\n    g = 1", "", "A g", "", id="global-in-class-body"),
    pytest.param(
        "class A:\n    def m(self):\n        return q\ndef f():\n    return A().m()\nf()",
        "q",
        "A f",
        "",
        id="def-uses-cell-class",
    ),
    # ---- comprehensions
    pytest.param("[i * k for i in r]", "r k", "", "", id="listcomp"),
    pytest.param("{k: v for k, v in d.items() if v}", "d", "", "d", id="dictcomp"),
    pytest.param("[j for i in m for j in i]", "m", "", "", id="nested-generators"),
    pytest.param("[x for x in x]", "x", "", "", id="first-iter-outer-scope"),
    pytest.param("(y for y in ys)\nprint(y)", "ys print y", "", "", id="genexp-no-leak"),
    pytest.param(
        "{s for s in ss}\n[[a * b for b in bs] for a in as_]",
        "ss bs as_",
        "",
        "",
        id="setcomp-nested",
    ),
    pytest.param(
        "[(last := v) for v in vs]\nprint(last)", "vs print last", "last", "", id="walrus-in-comp"
    ),
    # ---- walrus
    pytest.param("if (m := f()):\n    print(m)\nprint(m)", "f print", "m", "", id="walrus-in-test"),
    pytest.param("y = (n := 10) + n", "n", "n y", "", id="walrus-same-statement"),
    pytest.param("a or (b := 1)\nprint(b)", "a print b", "b", "", id="walrus-short-circuit"),
    pytest.param(
        "if a < (b := 1) < (c := 2):\n    pass\nprint(b, c)",
        "a print c",
        "b c",
        "",
        id="walrus-compare",
    ),
    pytest.param(
        "while (chunk := read()):\n    out.append(chunk)\nprint(chunk)",
        "read out print",
        "chunk",
        "out",
        id="walrus-while",
    ),
    # ---- match
    pytest.param(
        textwrap.dedent(
            """\
            match p:
                case Point(x=0, y=yy) if yy > lim:
                    r = yy
                case [first, *rest]:
                    r = first
                case {'k': v, **others}:
                    r = v
                case Color.RED | None:
                    r = 0
                case (1 | 2) as other:
                    r = other
            print(r)
            """
        ),
        "p Point lim Color print r",
        "yy first rest v others other r",
        "",
        id="match",
    ),
    # ---- lambdas: free names count immediately
    pytest.param("f = lambda a, b=d: a + b + c", "d c", "f", "", id="lambda"),
    pytest.param("g = lambda: (lambda x: x + y)", "y", "g", "", id="nested-lambda"),
    pytest.param("h = lambda xs: [x + z for x in xs]", "z", "h", "", id="lambda-comprehension"),
    pytest.param("k = lambda: v.append(1)", "v", "k", "v", id="lambda-mutation"),
    pytest.param("k = lambda: (w := 1)", "", "k", "", id="lambda-walrus-local"),
    # ---- top-level await and async constructs
    pytest.param("r = await client.get(url)", "client url", "r", "client", id="await"),
    pytest.param(
        "async for item in stream():\n    items.append(item)\nasync with lock:\n    pass",
        "stream items lock",
        "item",
        "items",
        id="async-for-with",
    ),
    # ---- IPython-transformed magics
    pytest.param(
        "get_ipython().run_line_magic('time', 'x = 1')",
        "get_ipython",
        "",
        "get_ipython",
        id="line-magic",
    ),
    pytest.param(
        "files = get_ipython().getoutput('ls')",
        "get_ipython",
        "files",
        "get_ipython",
        id="shell-escape",
    ),
]


@pytest.mark.parametrize(("source", "reads", "writes", "mutates"), CASES)
def test_analyse_cell(source: str, reads: str, writes: str, mutates: str) -> None:
    result = analyse_cell(source)
    assert result.reads == set(reads.split())
    assert result.writes == set(writes.split())
    assert result.mutates == set(mutates.split())
    assert result.mutates <= result.reads


@pytest.mark.parametrize(
    ("source", "imports"),
    [
        ("import a.b.c", {"a.b.c"}),
        ("import a.b as c, d", {"a.b", "d"}),
        ("from a.b import c", {"a.b"}),
        ("from . import x\nfrom .m import y\nfrom ..p.q import z", set()),
        ("from m import *", {"m"}),
        ("def f():\n    import pandas as pd", {"pandas"}),
        ("x = 1", set()),
    ],
)
def test_imports(source: str, imports: set[str]) -> None:
    assert analyse_cell(source).imports == imports


@pytest.mark.parametrize(
    ("source", "dynamic"),
    [
        ("from m import *", {"*"}),
        (
            "exec(c); eval(e); setattr(o, 'a', 1); getattr(o, 'b'); delattr(o, 'c')\n"
            "vars(o); locals(); globals(); __import__('os')",
            DYNAMIC_BUILTINS,
        ),
        ("globals()['x'] = 1", {"globals"}),
        ("f = [getattr(o, n) for n in names]", {"getattr"}),
        ("def f():\n    return eval(s)\nf()", {"eval"}),
        ("def f():\n    return eval(s)", set()),
        ("vars = 1\nprint(vars)", set()),
        ("print(x)", set()),
    ],
)
def test_calls_dynamic(source: str, dynamic: set[str]) -> None:
    assert analyse_cell(source).calls_dynamic == dynamic


@pytest.mark.parametrize("source", ["x = (", "def f(:\n    pass", "x = 1 +", "  indented = 1"])
def test_syntax_error(source: str) -> None:
    with pytest.raises(SyntaxError):
        analyse_cell(source)


def test_deferred_effects_of_definitions() -> None:
    source = "def g():\n    return y\ndef f():\n    global z\n    z = g()\nclass C:\n    def m(self):\n        w.append(1)\n"
    result = analyse_cell(source)
    assert dict(result.deferred) == {
        "g": (frozenset({"y"}), frozenset()),
        "f": (frozenset({"g", "y"}), frozenset({"z"})),
        "C": (frozenset({"w"}), frozenset()),
    }
    assert result.reads == set() and result.writes == {"f", "g", "C"}


def test_analysis_is_hashable() -> None:
    result = analyse_cell("def f():\n    return x\n")
    assert hash(result) == hash(analyse_cell("def f():\n    return x\n"))


# --------------------------------------------------------------------------- runtime

EARLIER_CELLS = """
import functools
import json

scale = 2
offset = 1
counter = 0
base = 0
weight = stat = clsval = propval = cache_src = extra = inner_val = layer_scale = 1

def helper(v):
    return v * scale

def compute(v):
    return helper(v) + offset

def ping(n):
    return pong(n - 1) if n else base

def pong(n):
    return ping(n)

def fact(n):
    return 1 if n == 0 else n * fact(n - 1)

def uses_fact():
    return fact(3)

def bump():
    global counter, created
    counter += 1
    created = True

def dumper(o):
    return json.dumps(o)

def uses_missing():
    return missing_name + scale

class Model:
    factor = 3
    def __init__(self):
        self.w = weight
    def predict(self, v):
        return compute(v) * self.factor
    @staticmethod
    def s():
        return stat
    @classmethod
    def c(cls):
        return clsval
    @property
    def p(self):
        return propval
    @p.setter
    def p(self, v):
        global setval
        setval = v

class Sub(Model):
    pass

m = Model()
bound = m.predict
part = functools.partial(compute, 1)
dumps = json.dumps

def deco(fn):
    def wrapper(*a):
        return fn(*a) + extra
    return wrapper

@deco
def wrapped_fn():
    return inner_val

@functools.lru_cache
def cached():
    return cache_src

class Layer:
    def forward(self):
        return layer_scale

class Net:
    def __init__(self, layer):
        self.layer = layer
    def run(self):
        return self.layer.forward()

net = Net(Layer())

def run():
    return step()
"""


@pytest.fixture(scope="module")
def ns() -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(compile(EARLIER_CELLS, "<cell>", "exec"), namespace)
    return namespace


MODEL_READS = {"weight", "compute", "helper", "scale", "offset", "stat", "clsval", "propval"}


def _expanded(*args: object) -> tuple[frozenset[str], frozenset[str]]:
    expansion = expand_through_callables(*args)  # type: ignore[arg-type]
    return expansion.reads, expansion.writes


@pytest.mark.parametrize(
    ("names", "reads", "writes"),
    [
        ({"compute"}, {"helper", "offset", "scale"}, set()),
        ({"ping"}, {"pong", "base"}, set()),  # cycle
        ({"fact"}, set(), set()),  # self-recursion: fact is not "extra"
        ({"uses_fact"}, {"fact"}, set()),
        ({"bump"}, {"counter"}, {"counter", "created"}),
        ({"dumper"}, {"json"}, set()),  # json.dumps is library code: not expanded
        ({"dumps"}, set(), set()),
        ({"json", "scale"}, set(), set()),
        ({"uses_missing"}, {"scale"}, set()),  # names not in the namespace are dropped
        ({"nope"}, set(), set()),
        ({"Model"}, MODEL_READS, {"setval"}),
        ({"Sub"}, MODEL_READS, {"setval"}),  # inherited methods
        ({"m"}, MODEL_READS, {"setval"}),  # instance -> its class
        ({"bound"}, MODEL_READS, {"setval"}),  # bound method -> function and self
        ({"part"}, {"helper", "offset", "scale"}, set()),
        ({"wrapped_fn"}, {"extra", "inner_val"}, set()),  # closure of a decorator
        ({"cached"}, {"cache_src"}, set()),  # __wrapped__ of a C wrapper
        ({"net"}, {"layer_scale"}, set()),  # attributes of a user instance
        ({"compute", "helper"}, {"offset", "scale"}, set()),
    ],
)
def test_expand_through_callables(
    ns: dict[str, object], names: set[str], reads: set[str], writes: set[str]
) -> None:
    assert _expanded(names, ns) == (reads, writes)


def test_expand_includes_cell_definitions_reached_at_runtime(ns: dict[str, object]) -> None:
    # `run` (earlier cell) looks up global `step`, which this cell (re)defines.
    analysis = analyse_cell("def step():\n    return helper(0) + unknown\nrun()")
    assert analysis.reads == {"run"}
    assert _expanded(analysis.reads, ns) == (set(), set())
    assert _expanded(analysis.reads, ns, analysis.deferred) == ({"helper", "scale"}, set())


def test_expand_namespace_identity() -> None:
    # An equal but distinct dict is not the function's globals: not user code.
    ns: dict[str, object] = {}
    exec("x = 1\ndef f():\n    return x", ns)
    assert _expanded(["f"], ns) == ({"x"}, set())
    assert _expanded(["f"], dict(ns)) == (set(), set())


def test_code_globals(ns: dict[str, object]) -> None:
    src = "def outer():\n    def inner():\n        return g1\n    class K:\n        a = g3\n    return [g2 for _ in r]\n"
    local: dict[str, object] = {}
    exec(src, local)
    loads, stores = code_globals(local["outer"].__code__)
    assert {"g1", "g2", "g3", "r"} <= loads
    assert stores == set()
    assert code_globals(ns["bump"].__code__) == ({"counter"}, {"counter", "created"})
    assert code_globals(ns["compute"].__code__) is code_globals(ns["compute"].__code__)  # cached


def test_referenced_globals(ns: dict[str, object]) -> None:
    assert referenced_globals(ns["compute"]) == {"helper", "offset"}
    assert referenced_globals(ns["bump"]) == {"counter"}  # `created` does not exist yet
    assert referenced_globals(ns["uses_missing"]) == {"scale"}


def test_expand_does_not_call_user_code(ns: dict[str, object]) -> None:
    calls = []

    class Tricky:
        def __getattr__(self, name: str) -> object:
            calls.append(name)
            return functools.partial(print)

    local = dict(ns)
    local["t"] = Tricky()
    expand_through_callables(["t"], local)
    assert calls == []


def _exec_cell(source: str) -> dict[str, object]:
    ns: dict[str, object] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<cell>", "exec"), ns)
    return ns


def test_referenced_globals_cover_nested_code_and_global_stores() -> None:
    ns = _exec_cell(
        """
        import os
        A = B = C = D = 1
        def f():
            global C
            C = 2
            x = A + len([])
            def g():
                return B + x
            return os.path.join, g, [D for _ in range(2)]
        """
    )
    assert referenced_globals(ns["f"]) == {"A", "B", "C", "D", "os"}  # type: ignore[arg-type]


def test_unbinds_are_deletions_of_names_the_cell_did_not_bind() -> None:
    assert analyse_cell("del x").unbinds == {"x"}
    assert analyse_cell("x = 1\ndel x").unbinds == set()
    assert analyse_cell("if c:\n    x = 1\ndel x").unbinds == {"x"}
    assert analyse_cell("del a, b[0]").unbinds == {"a"}

"""Tests for dsl.parser, dsl.syntax_errors and dsl.printer: round trips, precedence, spans,
syntax errors."""

from __future__ import annotations

import os

import pytest

from dsl import ast as A
from dsl import cache as cache_module
from dsl import parser as parser_module
from dsl import store
from dsl.errors import SyntaxErr
from dsl.parser import parse
from dsl.printer import format_expr, format_program

# --------------------------------------------------------------------------- round trips

# Every statement and expression form, written in canonical form: format(parse(s)) == s.
CANONICAL = [
    "model mlp_digits",
    'include "blocks.dl"',
    "data digits(test_fraction = 0.2, seed = 0)",
    "input x: f32[B, 64]",
    "input y: i64[B]",
    "input t: f64[] = 1.0",
    "input mask: bool[N]",
    "input ids: i32[...]",
    "input h: f16[B, H]",
    "const H = 256",
    'const NAME = "digits"',
    "param W: [n_in, units] = xavier_normal as weight",
    "param b: f32[units] = zeros as bias",
    "param w: [D] = normal(std = 0.1)",
    "param E: [shape(x)[-1], 2 * H] = normal(std = 0.02) as weight",
    "frozen S: [2, P] = normal(std = 1.0)",
    "frozen T: f32[P] = ones as scale",
    "state v = zeros_like(param)",
    "state mean: [n] = zeros",
    "h = relu(x @ W + b)",
    "mu, logvar = split(h, 2, axis = -1)",
    "alpha[i] = alpha[i] + 1",
    "a, b = b, a",
    "param = param - lr * grad",
    "foo(x)",
    "(a, b)",
    "return dense(h, 10)",
    "return a, b",
    "return (a,)",
    "emit mu",
    "for t in 0 .. T {\n    h = cell(h, x[:, t])\n}",
    "for t in reversed 0 .. T {\n    h = cell(h, x[:, t])\n}",
    "repeat blocks i in 0 .. 4 {\n    h = h + block(h)\n}",
    "loop s in 0 .. T - 1 {\n    x = step(x, s)\n    emit x\n}",
    "loop s in reversed 0 .. T {\n    x = step(x, s)\n    emit x as xs\n}",
    "if USE_SKIP {\n    h = h + x\n}",
    "if USE_SKIP {\n    h = h + x\n} else {\n    h = x\n}",
    "if X == 1 {\n    a = 1\n} else if X == 2 {\n    a = 2\n} else {\n    a = 3\n}",
    "if X == 1 {\n    a = 1\n} else if X == 2 {\n    a = 2\n}",
    "if X { } else {\n    a = 1\n}",
    "net classifier(x, hidden = 256) {\n    h = relu(dense(x, hidden))\n    return dense(h, 10)\n}",
    "def dense(x, units, bias = true, init = default_init) {\n"
    "    param W: [shape(x)[-1], units] = init as weight\n"
    "    if bias {\n        param b: [units] = zeros as bias\n        return x @ W + b\n    }\n"
    "    return x @ W\n}",
    "net empty(x) { }",
    "objective loss = cross_entropy(logits, y)",
    "metric acc = accuracy(logits, y)",
    "output f = x * y",
    "optimizer rms(lr = 1e-2, beta = 0.9) {\n    state v = zeros_like(param)\n"
    "    v = beta * v + (1 - beta) * grad ** 2\n"
    "    param = param - lr * grad / (sqrt(v) + 1e-8)\n}",
    "optimizer plain(lr) {\n    param = param - lr * grad\n}",
    "optimizer adam(lr = 1e-3) minimize loss",
    "optimizer adam(lr = 2e-4, beta1 = 0.5) minimize g_loss over params(G)",
    "optimizer sgd() minimize loss",
    "train { batch = 64, epochs = 20, seed = 0, order = [g_loss, d_loss] }",
    "train { }",
    "update {\n    alpha[i] = alpha[i] + 1\n}",
    "procedure sample(n = 1000) {\n    z = normal(shape = [n, Z])\n    return decoder(z)\n}",
    "procedure filter(x: f32[T], a = 0.9) {\n    y = x\n}",
    "procedure noargs() {\n    emit 1\n}",
    # expressions
    "y = a or b and not c",
    "y = (a or b) and c",
    "y = not a == b",
    "y = (not a) == b",
    "y = not not a",
    "y = a < b",
    "y = a <= b",
    "y = a > b",
    "y = a >= b",
    "y = a == b",
    "y = a != b",
    "y = (a < b) == c",
    "y = a - b - c",
    "y = a - (b - c)",
    "y = a @ b + c",
    "y = a @ (b + c)",
    "y = a * b / c // d % e @ f",
    "y = a / (b * c)",
    "y = -x ** 2",
    "y = (-x) ** 2",
    "y = 2 ** -1",
    "y = a ** b ** c",
    "y = (a ** b) ** c",
    "y = -a * +b",
    "y = --a",
    "y = -(a + b)",
    "y = f(x) ** 2",
    "y = f()",
    "y = f(a, b, k = v, m = [1, 2])",
    "y = f((a, b), (c,))",
    "y = enc.dense1.W",
    "y = f(x).h",
    "y = train.x + test.y",
    "y = (1).real",
    'y = "a \\"quoted\\" \\\\ string\\n\\ttab"',
    'y = ""',
    "y = true",
    "y = false",
    "y = None",
    "y = ()",
    "y = (a,)",
    "y = a, b",
    "y = []",
    "y = [a, b + 1, [c]]",
    "y = x[:, t]",
    "y = x[:, -1]",
    "y = sqrt(abar[t])[:, None]",
    "y = x[::2]",
    "y = x[a:]",
    "y = x[:-1]",
    "y = x[1:2:3]",
    "y = x[:b:2]",
    "y = x[i][j]",
    "y = x[None, :, None]",
    "y = 1e-3 + .5 + 5. + 1.5e+10 + 2E5 + 007",
    "y = lr * 0.95 ** epoch",
    "y = (a + b) * (c - d)",
    "y = a + b * c",
]


def _roundtrip(src: str) -> str:
    prog = parse(src)
    text = format_program(prog)
    again = parse(text)
    assert again == prog, f"parse(format(p)) != p\n--- source\n{src}\n--- printed\n{text}"
    assert format_program(again) == text
    return text


@pytest.mark.parametrize("src", CANONICAL)
def test_roundtrip_canonical(src: str) -> None:
    assert _roundtrip(src) == src + "\n"


# Non-canonical spellings: they must parse and round-trip, printing the canonical text.
LOOSE = [
    ("x=1;y=2", "x = 1\ny = 2\n"),
    ("x = 1 ; ; y = 2 ;", "x = 1\ny = 2\n"),
    ("\n\n# comment\nx = 1   # trailing\n\n\n", "x = 1\n"),
    ("h = f(\n    a,\n    b = 2,\n)\n", "h = f(a, b = 2)\n"),
    ("y = [\n  1,\n  2,\n]", "y = [1, 2]\n"),
    ("y = x[\n  :,\n  0\n]", "y = x[:, 0]\n"),
    ("y = (a\n  + b)", "y = a + b\n"),
    ("y = ((a))", "y = a\n"),
    ("y = (a, b,)", "y = a, b\n"),
    ("y = x[a::]", "y = x[a:]\n"),
    ("y = x[::]", "y = x[:]\n"),
    ("net f(x,) {\n\n    h = x ; return h\n\n}", "net f(x) {\n    h = x\n    return h\n}\n"),
    ("if a {\n    x = 1\n}\nelse {\n    x = 2\n}", "if a {\n    x = 1\n} else {\n    x = 2\n}\n"),
    (
        "if a { x = 1 }\n# why\nelse if b { x = 2 }",
        "if a {\n    x = 1\n} else if b {\n    x = 2\n}\n",
    ),
    (
        "if a {\n    x = 1\n} else {\n    if b {\n        x = 2\n    }\n}",
        "if a {\n    x = 1\n} else if b {\n    x = 2\n}\n",
    ),
    (
        "train {\n    batch = 64\n    epochs = 20,\n    lr = 1e-3,\n}",
        "train { batch = 64, epochs = 20, lr = 1e-3 }\n",
    ),
    ("train { batch = 64; epochs = 20 }", "train { batch = 64, epochs = 20 }\n"),
    (
        "optimizer rms(lr = 1e-2, beta = 0.9) { state v = zeros_like(param); "
        "v = beta * v; param = param - lr * v }",
        "optimizer rms(lr = 1e-2, beta = 0.9) {\n    state v = zeros_like(param)\n"
        "    v = beta * v\n    param = param - lr * v\n}\n",
    ),
    ("model m\r\nconst H = 2\r\n", "model m\nconst H = 2\n"),
    ("x = 1\tif a {x = 2}".replace("\tif", "\nif"), "x = 1\n\nif a {\n    x = 2\n}\n"),
    ("for t in 0..T { }", "for t in 0 .. T { }\n"),
    ("y = 'x'".replace("'", '"'), 'y = "x"\n'),
    ("", ""),
    ("\n\n", ""),
]


@pytest.mark.parametrize("src, canonical", LOOSE)
def test_roundtrip_loose(src: str, canonical: str) -> None:
    assert _roundtrip(src) == canonical


SPEC = """\
model mlp_digits
data digits(test_fraction = 0.2, seed = 0)   # x: f32[N,64], y: i64[N]
input x: f32[B, 64]
input y: i64[B]
const H = 256

net classifier(x) {
    h = relu(dense(x, H, init = xavier_normal))
    h = dropout(relu(dense(h, H)), p = 0.5)
    return dense(h, 10)
}

logits = classifier(x)
objective loss = cross_entropy(logits, y) + 5e-4 / 2 * l2(weights)
metric acc = accuracy(logits, y)
optimizer adam(lr = 1e-3 * 0.95 ** epoch) minimize loss
train { batch = 64, epochs = 20, seed = 0 }
"""

BIG_SPEC = """\
model vae_digits
include "blocks.dl"
data digits(test_fraction = 0.2, seed = 0)
input x: f32[B, 64]
input temp: f64[] = 1.0
const Z = 16
const USE_SKIP = true

def dense(x, units, bias = true, init = xavier_normal) {
    param W: [shape(x)[-1], units] = init as weight
    if bias {
        param b: f32[units] = zeros as bias
        return x @ W + b
    } else {
        return x @ W
    }
}

net encoder(x, hidden = 256) {
    h = relu(dense(x, hidden))
    repeat blocks i in 0 .. 4 {
        h = h + relu(dense(h, hidden)) * 0.5
    }
    mu, logvar = split(dense(h, 2 * Z), 2, axis = -1)
    return mu, logvar
}

net decoder(z) {
    h = relu(dense(z, 256))
    for t in reversed 0 .. 3 {
        h = tanh(dense(h, 256)) + h
    }
    return sigmoid(dense(h, 64))
}

mu, logvar = encoder(x)
z = mu + exp(0.5 * logvar) * normal_like(mu)
xr = decoder(z)
kl = -0.5 * sum(1 + logvar - mu ** 2 - exp(logvar), axis = 1)
objective loss = mean(sum((xr - x) ** 2, axis = 1) + kl)
metric recon = mean((xr - x) ** 2)
output sample = decoder(normal(shape = [B, Z]))

optimizer rms(lr = 1e-2, beta = 0.9) {
    state v = zeros_like(param)
    v = beta * v + (1 - beta) * grad ** 2
    param = param - lr * grad / (sqrt(v) + 1e-8)
}

optimizer rms(lr = 1e-3 * 0.95 ** epoch) minimize loss over params(encoder)
train { batch = 64, epochs = 20, seed = 0 }

procedure sample(n = 1000) {
    z = normal(shape = [n, Z])
    loop s in 0 .. 10 {
        emit decoder(z)[:, None]
    }
}
"""


def test_realistic_spec_parses_and_roundtrips() -> None:
    prog = parse(SPEC, "mlp.dl")
    assert prog.file == "mlp.dl"
    kinds = [type(s).__name__ for s in prog.body]
    assert kinds == [
        "ModelDecl",
        "DataDecl",
        "InputDecl",
        "InputDecl",
        "ConstDecl",
        "NetDef",
        "Assign",
        "ObjectiveDecl",
        "MetricDecl",
        "OptimizerUse",
        "TrainDecl",
    ]
    # the spec is already canonical except for the comment
    assert _roundtrip(SPEC) == SPEC.replace("   # x: f32[N,64], y: i64[N]", "")
    net = prog.body[5]
    assert isinstance(net, A.NetDef) and net.kind == "net" and len(net.body) == 3
    opt = prog.body[9]
    assert isinstance(opt, A.OptimizerUse)
    assert opt.rule.func == "adam" and opt.objective == "loss" and opt.over is None


def test_big_spec_is_canonical() -> None:
    assert _roundtrip(BIG_SPEC) == BIG_SPEC


# --------------------------------------------------------------------------- AST shapes


def n(id_: str) -> A.Name:
    return A.Name(id_)


def num(text: str) -> A.Num:
    return A.Num(int(text) if text.isdigit() else float(text), text)


def expr(src: str) -> A.Expr:
    stmt = parse(f"y = {src}").body[0]
    assert isinstance(stmt, A.Assign)
    return stmt.value


def test_statement_nodes() -> None:
    body = parse(
        "input x: f64[] = 1.0\n"
        "param W: [n_in, units] = xavier_normal as weight\n"
        "param w: [D] = normal(std = 0.1)\n"
        "frozen S: [2, P] = normal(std = 1.0)\n"
        "state v = zeros_like(param)\n"
        "state mean: [n] = zeros\n"
        "alpha[i] = alpha[i] + 1\n"
        "foo(x)\n"
        "optimizer adam(lr = 2e-4, beta1 = 0.5) minimize g_loss over params(G)\n"
        "procedure filter(x: f32[T], a = 0.9) { }\n"
        "for t in reversed 0 .. T { }\n"
        "repeat blocks i in 0 .. 4 { }\n"
        "if a { } else if b { } else { x = 1 }\n"
    ).body
    assert body[0] == A.InputDecl("x", A.TypeExpr("f64", ()), num("1.0"))
    assert body[1] == A.ParamDecl(
        "W", A.TypeExpr(None, (n("n_in"), n("units"))), n("xavier_normal"), False, "weight"
    )
    assert body[2] == A.ParamDecl(
        "w",
        A.TypeExpr(None, (n("D"),)),
        A.Call("normal", (), (A.Keyword("std", num("0.1")),)),
        False,
        None,
    )
    assert isinstance(body[3], A.ParamDecl) and body[3].frozen and body[3].kind is None
    assert body[4] == A.StateDecl("v", None, A.Call("zeros_like", (n("param"),), ()))
    assert body[5] == A.StateDecl("mean", A.TypeExpr(None, (n("n"),)), n("zeros"))
    assert body[6] == A.Assign(
        (A.Target("alpha", (n("i"),)),),
        A.BinOp("+", A.Index(n("alpha"), (n("i"),)), num("1")),
    )
    assert body[7] == A.ExprStmt(A.Call("foo", (n("x"),), ()))
    assert body[8] == A.OptimizerUse(
        A.Call("adam", (), (A.Keyword("lr", num("2e-4")), A.Keyword("beta1", num("0.5")))),
        "g_loss",
        A.Call("params", (n("G"),), ()),
    )
    assert body[9] == A.ProcedureDef(
        "filter",
        (A.Param("x", None, A.TypeExpr("f32", (n("T"),))), A.Param("a", num("0.9"))),
        (),
    )
    assert body[10] == A.For("t", num("0"), n("T"), True, ())
    assert body[11] == A.Repeat("blocks", "i", num("0"), num("4"), ())
    inner = A.If(n("b"), (), (A.Assign((A.Target("x", None),), num("1")),))
    assert body[12] == A.If(n("a"), (), (inner,))


def test_optimizer_definition_params() -> None:
    (opt,) = parse("optimizer rms(lr, beta = 0.9) { param = param - lr * grad }").body
    assert isinstance(opt, A.OptimizerDef)
    assert opt.params == (A.Param("lr"), A.Param("beta", num("0.9")))
    (assign,) = opt.body
    assert isinstance(assign, A.Assign) and assign.targets == (A.Target("param", None),)
    assert assign.value == A.BinOp("-", n("param"), A.BinOp("*", n("lr"), n("grad")))


def test_train_settings_and_data() -> None:
    train, data = parse(
        "train { batch = 64, epochs = 20, order = [g_loss, d_loss], }\ndata digits()"
    ).body
    assert isinstance(train, A.TrainDecl)
    assert [s.name for s in train.settings] == ["batch", "epochs", "order"]
    assert train.settings[2].value == A.ListExpr((n("g_loss"), n("d_loss")))
    assert data == A.DataDecl(A.Call("digits", (), ()))


@pytest.mark.parametrize(
    "src, tree",
    [
        ("-x ** 2", A.UnaryOp("-", A.BinOp("**", n("x"), num("2")))),
        ("2 ** -1", A.BinOp("**", num("2"), A.UnaryOp("-", num("1")))),
        ("a ** b ** c", A.BinOp("**", n("a"), A.BinOp("**", n("b"), n("c")))),
        ("a - b - c", A.BinOp("-", A.BinOp("-", n("a"), n("b")), n("c"))),
        ("a @ b + c", A.BinOp("+", A.BinOp("@", n("a"), n("b")), n("c"))),
        ("a + b @ c", A.BinOp("+", n("a"), A.BinOp("@", n("b"), n("c")))),
        ("not a == b", A.UnaryOp("not", A.Compare("==", n("a"), n("b")))),
        ("a or b and c", A.BinOp("or", n("a"), A.BinOp("and", n("b"), n("c")))),
        ("a and b or c", A.BinOp("or", A.BinOp("and", n("a"), n("b")), n("c"))),
        ("a < b + 1", A.Compare("<", n("a"), A.BinOp("+", n("b"), num("1")))),
        ("-a * b", A.BinOp("*", A.UnaryOp("-", n("a")), n("b"))),
        ("a // b * c", A.BinOp("*", A.BinOp("//", n("a"), n("b")), n("c"))),
        ("a % b", A.BinOp("%", n("a"), n("b"))),
        ("-x[0]", A.UnaryOp("-", A.Index(n("x"), (num("0"),)))),
        ("x.a.b", A.Attribute(A.Attribute(n("x"), "a"), "b")),
        ("train.x", A.Attribute(n("train"), "x")),
        ("f(a)[0].b", A.Attribute(A.Index(A.Call("f", (n("a"),), ()), (num("0"),)), "b")),
        ("x[:, None]", A.Index(n("x"), (A.Slice(None, None, None), A.NoneLit()))),
        ("x[:-1]", A.Index(n("x"), (A.Slice(None, A.UnaryOp("-", num("1")), None),))),
        ("x[::2]", A.Index(n("x"), (A.Slice(None, None, num("2")),))),
        ("x[a:]", A.Index(n("x"), (A.Slice(n("a"), None, None),))),
        ("(a,)", A.TupleExpr((n("a"),))),
        ("(a)", n("a")),
        ("a, b", A.TupleExpr((n("a"), n("b")))),
        ("[]", A.ListExpr(())),
        ("None", A.NoneLit()),
        ("true", A.Bool(True)),
        ('"a\\nb\\u0041"', A.Str("a\nbA")),
    ],
)
def test_precedence_and_forms(src: str, tree: A.Expr) -> None:
    assert expr(src) == tree


def test_numbers_keep_spelling_and_type() -> None:
    values = [expr(s) for s in ["7", "007", "1e-3", ".5", "5.", "2.50", "1E+2"]]
    assert all(isinstance(v, A.Num) for v in values)
    assert [(type(v.value), v.value, v.text) for v in values] == [  # type: ignore[union-attr]
        (int, 7, "7"),
        (int, 7, "007"),
        (float, 1e-3, "1e-3"),
        (float, 0.5, ".5"),
        (float, 5.0, "5."),
        (float, 2.5, "2.50"),
        (float, 100.0, "1E+2"),
    ]


def test_param_and_train_are_names_in_expressions() -> None:
    (stmt,) = parse("param = param - lr * zeros_like(param)").body
    assert isinstance(stmt, A.Assign) and stmt.targets[0].name == "param"
    assert expr("f(param = 1, train = 2)") == A.Call(
        "f", (), (A.Keyword("param", num("1")), A.Keyword("train", num("2")))
    )
    assert expr("bool(f32)") == A.Call("bool", (n("f32"),), ())  # dtypes are not keywords
    assert expr("opt.param") == A.Attribute(n("opt"), "param")


# --------------------------------------------------------------------------- printer


@pytest.mark.parametrize(
    "tree, text",
    [
        (A.BinOp("-", n("a"), A.BinOp("-", n("b"), n("c"))), "a - (b - c)"),
        (A.BinOp("-", A.BinOp("-", n("a"), n("b")), n("c")), "a - b - c"),
        (A.BinOp("**", A.BinOp("**", n("a"), n("b")), n("c")), "(a ** b) ** c"),
        (A.BinOp("**", A.UnaryOp("-", n("x")), num("2")), "(-x) ** 2"),
        (A.UnaryOp("-", A.BinOp("**", n("x"), num("2"))), "-x ** 2"),
        (A.UnaryOp("not", A.BinOp("and", n("a"), n("b"))), "not (a and b)"),
        (A.Compare("<", A.Compare("<", n("a"), n("b")), n("c")), "(a < b) < c"),
        (A.BinOp("*", A.BinOp("+", n("a"), n("b")), n("c")), "(a + b) * c"),
        (A.Index(A.BinOp("+", n("a"), n("b")), (num("0"),)), "(a + b)[0]"),
        (A.Attribute(A.UnaryOp("-", n("a")), "T"), "(-a).T"),
        (A.Call("f", (A.TupleExpr((n("a"), n("b"))),), ()), "f((a, b))"),
        (A.TupleExpr(()), "()"),
        (A.Str('say "hi"\\\n\x01'), '"say \\"hi\\"\\\\\\n\\u0001"'),
    ],
)
def test_printer_minimal_parentheses(tree: A.Expr, text: str) -> None:
    assert format_expr(tree) == text
    assert expr(text) == tree


def test_printer_number_without_text() -> None:
    assert format_expr(A.Num(3, "")) == "3"
    assert format_expr(A.Num(0.5, "")) == "0.5"


def test_printer_roundtrips_constructed_program() -> None:
    prog = A.Program(
        (
            A.ConstDecl("K", A.BinOp("-", num("1"), A.BinOp("+", num("2"), num("3")))),
            A.Assign(
                (A.Target("a", None), A.Target("b", (A.Slice(None, None, None), n("i")))),
                A.TupleExpr((A.TupleExpr((n("x"),)), n("y"))),
            ),
            A.If(
                A.UnaryOp("not", n("c")),
                (A.Return(A.TupleExpr((n("x"),))),),
                (A.If(n("d"), (), ()),),
            ),
            A.TrainDecl((A.Setting("batch", num("64")),)),
        )
    )
    text = format_program(prog)
    assert text == (
        "const K = 1 - (2 + 3)\n"
        "a, b[:, i] = (x,), y\n\n"
        "if not c {\n    return (x,)\n} else if d { }\n\n"
        "train { batch = 64 }\n"
    )
    assert parse(text) == prog


# --------------------------------------------------------------------------- newlines


def test_newlines_inside_brackets_are_ignored_but_separate_block_statements() -> None:
    prog = parse(
        "net f(\n    x,\n    units = 3\n) {\n"
        "    h = g(x,\n          [1,\n           2])\n"
        "    k = h[\n      0]\n"
        "    return k\n}\n"
    )
    (net,) = prog.body
    assert isinstance(net, A.NetDef)
    assert [p.name for p in net.params] == ["x", "units"]
    assert [type(s).__name__ for s in net.body] == ["Assign", "Assign", "Return"]
    # two statements on two lines of a block are two statements, not one
    with pytest.raises(SyntaxErr):
        parse("net f(x) { h = x k = h }")


def test_semicolons_and_blank_lines() -> None:
    prog = parse(";\n\nmodel m;;\n\n\nconst A = 1; const B = 2\n\n")
    assert [type(s).__name__ for s in prog.body] == ["ModelDecl", "ConstDecl", "ConstDecl"]


# --------------------------------------------------------------------------- spans


def test_spans() -> None:
    src = "model m\n\nnet f(x) {\n    h = (a + b) * c\n    return h\n}\ny = f(\n  x,\n  k = 2)\n"
    prog = parse(src, "s.dl")
    model, net, assign = prog.body
    assert model.span == A.Span("s.dl", 1, 1, 1, 8)
    assert isinstance(net, A.NetDef)
    assert (net.span.line, net.span.col, net.span.end_line) == (3, 1, 6)
    assert net.params[0].span == A.Span("s.dl", 3, 7, 3, 8)
    h = net.body[0]
    assert isinstance(h, A.Assign)
    assert (h.span.line, h.span.col) == (4, 5)
    assert h.targets[0].span == A.Span("s.dl", 4, 5, 4, 6)
    mul = h.value
    assert isinstance(mul, A.BinOp) and mul.op == "*"
    assert mul.span == A.Span("s.dl", 4, 9, 4, 20)  # includes the parentheses
    assert mul.left.span == A.Span("s.dl", 4, 10, 4, 15)
    ret = net.body[1]
    assert (ret.span.line, ret.span.col) == (5, 5)
    assert isinstance(assign, A.Assign)
    call = assign.value
    assert isinstance(call, A.Call)
    assert (call.span.line, call.span.col, call.span.end_line, call.span.end_col) == (7, 5, 9, 9)
    assert call.kwargs[0].span == A.Span("s.dl", 9, 3, 9, 8)
    assert str(call.span) == "s.dl:7:5"


# --------------------------------------------------------------------------- syntax errors

ERRORS = [
    # (source, line, col, substring of the message)
    ("const H 256", 1, 9, "expected '=' after the constant name"),
    ("param W = xavier_normal", 1, 9, "param declarations need a type: param W: [n, m] = init"),
    ("net f(x) {\n    param W = zeros\n}", 2, 13, "param declarations need a type"),
    ("input x = 3", 1, 9, "input declarations need a type"),
    ("x = relu(a\ny = 2\n", 1, 9, "missing ')'"),
    ("x = relu(a", 1, 9, "missing ')'"),
    ("y = [1, 2\n", 1, 5, "missing ']'"),
    ("net f(x) {\n    h = x\n", 1, 10, "missing '}'"),
    ("x = a +\ny = 2", 1, 8, "unexpected end of line, expected an expression"),
    ("x = 1 2", 1, 7, "unexpected '2', expected one of: ',', ';', an operator, end of line"),
    ("h = relu x", 1, 10, "unexpected 'x'"),
    ("x = ", 1, 5, "unexpected end of input"),
    ("model m\nconst H =\n\n", 2, 10, "unexpected end of line"),
    ("}", 1, 1, "unmatched '}'"),
    ("x = f(a))", 1, 9, "unmatched ')'"),
    ("x = [f(a]", 1, 9, "']' does not close the '(' opened at line 1 col 7; expected ')'"),
    ("x = f(a]", 1, 8, "unmatched ']'"),
    ("net f(x) {\n    h = relu(x\n}\n", 2, 13, "missing ')': this '(' is never closed"),
    ("x = f(k = )", 1, 11, "unexpected ')', expected an expression"),
    ("h = f(a,\n      b c)", 2, 9, "unexpected 'c'"),  # closed later: not "missing ')'"
    ('include "blocks.dl', 1, 9, "unterminated string"),
    ("x = a $ b", 1, 7, "unexpected character '$'"),
    ("x = 'a'", 1, 5, "double quotes"),
    ('x = "a\\q"', 1, 5, "unknown escape sequence"),
    ("x = a < b < c", 1, 11, "comparisons cannot be chained"),
    ("if x = 2 { }", 1, 6, "use '==' to compare"),
    ("train { batch: 64 }", 1, 14, "train settings are written name = value"),
    ("f(a = 1, b)", 1, 10, "positional argument after keyword"),
    ("f(a = 1, a = 2)", 1, 10, "keyword argument 'a' repeated"),
    ("f(x) = 3", 1, 1, "cannot assign to a call"),
    ("x.y = 3", 1, 1, "cannot assign to an attribute"),
    ("input x: f33[B]", 1, 10, "unknown dtype 'f33' (did you mean 'f32'?)"),
    ("optimizer rms(1) { }", 1, 15, "optimizer parameters are names"),
    ("for t in 0 T { }", 1, 12, "expected one of: '..', an operator"),
    ("metric acc accuracy(x)", 1, 12, "expected '=' after the metric name"),
    ("model", 1, 6, "unexpected end of input, expected a name"),
    ("if x { } else", 1, 14, "unexpected end of input"),
    ("const for = 1", 1, 7, "unexpected 'for', expected a name"),
    ("x = (a b)", 1, 8, "unexpected 'b', expected one of: '(', ')', ',', an operator"),
]


@pytest.mark.parametrize("src, line, col, message", ERRORS)
def test_syntax_errors(src: str, line: int, col: int, message: str) -> None:
    with pytest.raises(SyntaxErr) as info:
        parse(src, "bad.dl")
    err = info.value
    assert err.span is not None
    assert (err.span.file, err.span.line, err.span.col) == ("bad.dl", line, col), str(err)
    assert message in err.message
    text = str(err)
    assert text.startswith(f"bad.dl:{line}:{col}: error: ")
    lines = text.splitlines()
    source_line = src.splitlines()[line - 1] if src.splitlines() else ""
    assert lines[1] == f"  {source_line}"
    assert lines[2].startswith("  " + " " * (col - 1) + "^")


def test_unexpected_end_points_at_last_line() -> None:
    with pytest.raises(SyntaxErr) as info:
        parse("model m\nobjective loss =\n\n\n", "e.dl")
    assert info.value.span is not None and info.value.span.line == 2


@pytest.mark.parametrize("cut", range(0, len(BIG_SPEC), 11))
def test_no_lark_exception_escapes(cut: int) -> None:
    # Every prefix of a valid spec (and the prefix with a stray character) either parses or
    # raises SyntaxErr; nothing else escapes `parse`.
    for src in (BIG_SPEC[:cut], BIG_SPEC[:cut] + ")", BIG_SPEC[:cut] + "= ?"):
        try:
            parse(src, "cut.dl")
        except SyntaxErr as e:
            assert e.span is not None and e.span.line >= 1
            assert str(e).startswith("cut.dl:")


# --------------------------------------------------------------------------- parser cache


def test_parser_is_built_once() -> None:
    assert parser_module.get_parser() is parser_module.get_parser()


def test_grammar_cache_is_private_atomic_and_self_healing(tmp_path, monkeypatch) -> None:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("DSLRUN_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("DSLRUN_NO_CACHE", raising=False)
    text = "y = f(\n  a)\nif a { } else { b = 1 }\n"
    expected = parser_module.get_parser().parse(text)
    assert parser_module._build_parser().parse(text) == expected  # builds, writes the cache
    (cached,) = cache_dir.glob("grammar-*.lark")
    assert not list(cache_dir.glob("*.tmp"))
    if hasattr(os, "getuid"):
        assert cache_dir.stat().st_mode & 0o077 == 0
    assert parser_module._build_parser().parse(text) == expected  # loads the cache
    cached.write_bytes(b"not a pickle")
    assert parser_module._build_parser().parse(text) == expected  # rebuilds
    if hasattr(os, "getuid"):
        cache_dir.chmod(0o777)
        assert store.cache_dir() is None  # writable by others: not used
        cache_dir.chmod(0o700)


def test_parsed_prelude_cache(tmp_path, monkeypatch) -> None:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("DSLRUN_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("DSLRUN_NO_CACHE", raising=False)
    text = "def f(a) {\n  return a * 2\n}\n"
    first = cache_module.parse_cached(text, "<lib>")
    (entry,) = cache_dir.glob("ast-*.pickle")
    assert not list(cache_dir.glob("*.tmp"))
    if hasattr(os, "getuid"):
        assert entry.stat().st_mode & 0o077 == 0

    def no_parse(*args: object) -> None:
        raise AssertionError("parsed again")

    with monkeypatch.context() as m:
        m.setattr(parser_module, "parse", no_parse)
        again = cache_module.parse_cached(text, "<lib>")
    assert again == first and again.body[0].span == first.body[0].span
    entry.write_bytes(b"not a pickle")
    assert cache_module.parse_cached(text, "<lib>") == first  # parses and rewrites
    changed = cache_module.parse_cached(text + "g = 1\n", "<lib>")
    assert len(changed.body) == 2 and [entry] != list(cache_dir.glob("ast-*.pickle"))
    assert len(list(cache_dir.glob("ast-*.pickle"))) == 1  # the stale version is gone
    monkeypatch.setenv("DSLRUN_NO_CACHE", "1")
    assert cache_module.parse_cached(text, "<other>") == first
    assert len(list(cache_dir.glob("ast-*.pickle"))) == 1


def test_long_operator_chain_does_not_recurse() -> None:
    src = "x = " + " + ".join(f"a{i}" for i in range(3000)) + " - b * c\n"
    prog = parse(src)
    assert format_program(prog) == src


# --------------------------------------------------------------------------- AST records


def test_ast_nodes_are_frozen_records_compared_without_spans() -> None:
    import pickle

    here, there = A.Span("a.dl", 1, 2, 1, 5), A.Span("b.dl", 9, 9, 9, 9)
    x = A.Call("f", (A.Name("x", here),), (), here)
    y = A.Call(func="f", args=(A.Name("x"),), kwargs=(), span=there)
    assert x == y and hash(x) == hash(y) and x.span != y.span
    assert x != A.Call("g", (A.Name("x"),), ()) and x != A.Name("f")
    assert repr(x) == "Call(func='f', args=(Name(id='x'),), kwargs=())"
    assert A.Param("p").default is None and A.Param("p").span is A.NO_SPAN
    assert A.Program((), "a.dl") == A.Program((), "b.dl")
    assert repr(A.Program((), "a.dl")) == "Program(body=(), file='a.dl')"
    with pytest.raises(AttributeError, match="cannot assign"):
        x.func = "g"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot delete"):
        del x.func
    with pytest.raises(TypeError, match="missing field 'args'"):
        A.Call("f")
    with pytest.raises(TypeError, match="unexpected or repeated field 'func'"):
        A.Call("f", func="g")
    with pytest.raises(TypeError, match="takes 4 fields, got 5"):
        A.Call("f", (), (), here, 1)
    back = pickle.loads(pickle.dumps(x))
    assert back == x and back.span == here and back.args[0].span == here

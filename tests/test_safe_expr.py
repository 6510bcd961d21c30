import pytest

from evalbot import safe_expr
from evalbot.safe_expr import ExprError

ENV = {"n_rows": 4096, "n_cols": 2048, "n_ctx": 16384, "n_sm": 132}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("n_rows", 4096),
        (7, 7),
        ("ceil_div(n_rows, 8)", 512),
        ("ceil_div(4097, 8)", 513),
        ("min(1024, n_cols // 4)", 512),
        ("max(1, n_ctx // 256, n_sm * 2)", 264),
        ("(n_rows + 255) // 256 * 256 - n_cols % 1000", 4096 - 48),
        ("-3 + +5", 2),
        ("-7 // 2", -4),  # Python floor semantics, documented
    ],
)
def test_evaluates_integer_arithmetic(text, value):
    assert safe_expr.evaluate(text, ENV) == value


def test_parsed_expression_reports_its_names_and_reevaluates():
    expr = safe_expr.parse("ceil_div(n_rows, 8) + n_sm", ENV)
    assert expr.names == {"n_rows", "n_sm"}
    assert expr.evaluate({"n_rows": 16, "n_sm": 1}) == 3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("__import__('os').system('true')", "only the functions"),
        ("n_rows ** 2", "Pow is not allowed"),
        ("n_rows.bit_length()", "only the functions"),
        ("[1, 2][0]", "not allowed"),
        ("n_rows if n_cols else 1", "IfExp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("1.5 * n_rows", "only integer literals"),
        ("True + 1", "only integer literals"),
        ("'a'", "only integer literals"),
        ("n_rowz", "unknown symbol 'n_rowz'"),
        ("n_rows < n_cols", "Compare is not allowed"),
        ("n_rows / 2", "Div is not allowed"),
        ("n_rows << 2", "LShift is not allowed"),
        ("~n_rows", "Invert is not allowed"),
        ("min(n_rows)", "at least 2 arguments"),
        ("ceil_div(1, 2, 3)", "takes 2 arguments"),
        ("max(*[1, 2])", "starred"),
        ("min(a=1, b=2)", "keyword"),
        ("x := 3", "not a valid expression"),
        ("", "empty expression"),
        ("1" + " + 1" * 100, "more than 256 terms"),
        ("(" * 300 + "1" + ")" * 300, "longer than 512"),
        ("-" * 511 + "1", "more than 256 terms"),
        (str(2**70), "does not fit in 64 bits"),
    ],
)
def test_refuses_everything_outside_the_whitelist(text, needle):
    with pytest.raises(ExprError, match=needle.replace("(", r"\(").replace("*", r"\*")):
        safe_expr.parse(text, ENV)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("n_rows // (n_cols - 2048)", "division by zero"),
        ("n_rows % 0", "division by zero"),
        ("ceil_div(n_rows, 0)", "ceil_div by zero"),
        ("n_rows * n_rows * n_rows * n_rows * n_rows * n_rows", "overflows 64 bits"),
    ],
)
def test_evaluation_errors_are_clear(text, needle):
    expr = safe_expr.parse(text, ENV)
    with pytest.raises(ExprError, match=needle):
        expr.evaluate(ENV)


def test_missing_value_at_evaluation_is_an_error():
    expr = safe_expr.parse("n_ctx + 1", ENV)
    with pytest.raises(ExprError, match="no value for symbol 'n_ctx'"):
        expr.evaluate({"n_rows": 1})


@pytest.mark.parametrize("value", [1.0, None, [1], True])
def test_non_text_non_int_input_is_refused(value):
    with pytest.raises(ExprError, match="expected an integer or an expression string"):
        safe_expr.parse(value, ENV)


def test_deep_but_short_nesting_is_fine():
    assert safe_expr.evaluate("(" * 100 + "n_sm" + ")" * 100, ENV) == 132

"""The nesting bound in front of tomllib: refuses what would recurse or blow up, passes every real document."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from evalbot import bounded_toml
from evalbot.bounded_toml import MAX_DEPTH, NestingError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a = " + "[" * 100_000 + "]" * 100_000, "line 1: nested deeper than 32 levels"),
        ("a = " + "{b = " * 100_000 + "1" + "}" * 100_000, "line 1: nested deeper than 32 levels"),
        ("x = 1\na = " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "line 2: nested deeper"),
        ("k" + ".k" * 100_000 + " = 1", "line 1: a dotted key of more than 32 parts"),
        ("[t]\n" + ".".join(f'"{i}"' for i in range(40)) + " = 1", "line 2: a dotted key"),
        ("a = {" + "b." * 40 + "c = 1}", "a dotted key"),
        ("[" + "t." * 40 + "u]", "a dotted key"),
        # What follows a string the parser ends as TOML says (two extra quotes may close a
        # multi-line string) is counted: the scan does not take the rest of the line for a string.
        ('a = ["""x""""' + ", " + "[" * 40 + "]" * 40 + "]", "nested deeper"),
        ("a = ['''x''''" + ", " + "[" * 40 + "]" * 40 + "]", "nested deeper"),
        ('a = ["\\"", ' + "[" * 40 + "]" * 40 + "]", "nested deeper"),
    ],
    ids=["arrays", "inline-tables", "depth-33", "dotted-key", "quoted-parts", "inline-dotted", "header",
         "ml-basic-quotes", "ml-literal-quotes", "escaped-quote"],
)
def test_deep_nesting_is_refused_before_parsing(text, needle):
    with pytest.raises(NestingError, match=needle.replace("[", r"\[")):
        bounded_toml.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * MAX_DEPTH + "]" * MAX_DEPTH,
        ".".join("k" * MAX_DEPTH) + " = 1",
        'a = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[" # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[',
        "a = '" + "." * 100 + "'\nb = '''\n" + "{" * 100 + "\n'''",
        'a = """\n' + "[" * 100 + '\\"""' + "]" * 100 + '\n"""',
        "# " + "[" * 100 + "\na = [1.5, 2.5, 3.5, 1979-05-27T07:32:00.999, 6.626e-34]",
        "a = [\n" + "  1.5,\n" * 100 + "]",
    ],
    ids=["depth-32", "key-of-32-parts", "brackets-in-string-and-comment", "dots-and-braces-in-strings",
         "escaped-quotes-in-ml-string", "comment-and-numbers", "floats-over-lines"],
)
def test_strings_comments_and_numbers_do_not_count(text):
    assert bounded_toml.loads(text) == tomllib.loads(text)


def test_the_projects_own_toml_files_pass():
    files = [*ROOT.glob("*.toml"), *ROOT.glob("evalbot/**/*.toml"), *ROOT.glob("tests/data/**/*.toml")]
    assert files
    for path in files:
        text = path.read_text()
        assert bounded_toml.loads(text) == tomllib.loads(text), path

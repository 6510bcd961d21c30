import shutil
from pathlib import Path

import pytest

from evalbot.manifest import MANIFEST_NAME, ManifestError, load_manifest
from reference_runtime import slots as abi

KERNELS = Path(__file__).parent / "data" / "kernels"

RMSNORM = """
version = 1
include = ["include"]

[slots.rmsnorm]
source = "src/rmsnorm.cu"
{extra}
[[slots.rmsnorm.launch]]
kernel = "rmsnorm_f32"
grid = [1]
block = [{block}]
{launch_extra}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(KERNELS, root)
    return root


def write(root: Path, text: str) -> Path:
    (root / MANIFEST_NAME).write_text(text)
    return root


def rmsnorm(root: Path, extra: str = "", block: str = "256", launch_extra: str = "") -> Path:
    return write(root, RMSNORM.format(extra=extra, block=block, launch_extra=launch_extra))


def refused(root: Path) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(root)
    return str(info.value)


def test_the_test_kernels_manifest_is_valid():
    manifest = load_manifest(KERNELS)
    assert list(manifest.slots) == ["rmsnorm", "gemv_q8_0", "gemv_f32", "glu_swiglu"]
    gemv = manifest.slots["gemv_q8_0"]
    assert gemv.source == "src/gemv_q8_0.cu"
    assert gemv.flags == ("-use_fast_math",)
    assert gemv.kernels == ("gemv_q8_0",)
    assert gemv.launches[0].grid[0].evaluate({"n_rows": 4097}) == 513
    assert [e.text for e in gemv.launches[0].block] == ["256", "1", "1"]
    assert manifest.include == ("include",)


def test_every_slot_a_manifest_may_name_is_in_the_catalogue():
    assert {"rmsnorm", "gemv_q4_k", "gemv_q8_0", "attn_decode_hd512", "moe_router_topk"} <= set(abi.SLOTS)
    for slot in abi.SLOTS.values():
        assert slot.symbols, slot.name
        assert set(slot.all_symbols) <= set(abi.SYMBOLS)
        for env in slot.example_shapes():
            assert set(slot.symbols) <= set(env), slot.name


def test_split_k_attention_may_chain_two_kernels_over_its_symbols(tree):
    write(tree, """
version = 1
[slots.attn_decode_hd128]
source = "src/rmsnorm.cu"
scratch_bytes = "n_head * max(1, n_sm // n_head_kv) * (head_dim + 2) * 4"
[[slots.attn_decode_hd128.launch]]
kernel = "partial"
grid = ["n_head_kv", "max(1, n_sm // n_head_kv)"]
block = ["head_dim"]
shared_bytes = "head_dim * 4"
[[slots.attn_decode_hd128.launch]]
kernel = "combine"
grid = ["n_head"]
block = [128]
""")
    slot = load_manifest(tree).slots["attn_decode_hd128"]
    assert slot.kernels == ("partial", "combine")
    assert slot.launches[0].block[0].evaluate({"head_dim": 128}) == 128


def test_pdl_is_declared_per_launch_and_off_unless_declared(tree):
    assert load_manifest(rmsnorm(tree)).slots["rmsnorm"].launches[0].pdl is False
    assert load_manifest(rmsnorm(tree, launch_extra="pdl = true")).slots["rmsnorm"].launches[0].pdl is True


def test_a_symlink_inside_the_tree_is_followed(tree):
    (tree / "src" / "alias.cu").symlink_to("rmsnorm.cu")
    rmsnorm(tree)
    text = (tree / MANIFEST_NAME).read_text().replace("src/rmsnorm.cu", "src/alias.cu")
    write(tree, text)
    assert load_manifest(tree).slots["rmsnorm"].source == "src/alias.cu"


@pytest.mark.parametrize(
    ("kwargs", "field", "needle"),
    [
        ({"extra": 'flags = ["-Xcompiler=-fplugin=/tmp/evil.so"]'}, "flags[0]", "is not allowed"),
        ({"extra": 'flags = ["-ccbin=/tmp/evil"]'}, "flags[0]", "is not allowed"),
        ({"extra": 'flags = ["--compiler-bindir", "/tmp"]'}, "flags[0]", "is not allowed"),
        ({"extra": 'flags = ["-O3", "-arch=sm_80"]'}, "flags[1]", "is not allowed"),
        ({"extra": 'flags = ["-DX=$(id)"]'}, "flags[0]", "is not allowed"),
        ({"extra": 'flags = ["-I/etc"]'}, "flags[0]", "is not allowed"),
        ({"extra": 'flags = "-O3"'}, "flags", "must be a list"),
        ({"extra": 'scratch_bytes = "n_embd * 4 + n_vocab"'}, "scratch_bytes", "unknown symbol 'n_vocab'"),
        ({"extra": 'scratch_bytes = "-1"'}, "scratch_bytes", "is -1 on the qwen3moe example shapes"),
        ({"extra": "colour = 1"}, "colour", "unknown key"),
        ({"block": "2048"}, "launch[0].block[0]", "allowed 1..1024"),
        ({"block": "64, 32"}, "launch[0].block", "2048 threads per block"),
        ({"block": "'n_embd // 1000'"}, "launch[0].block[0]", "is 0 on the gemma3 example shapes"),
        ({"block": "'ceil_div(256, n_embd - 640)'"}, "launch[0].block[0]", "ceil_div by zero on the gemma3"),
        ({"block": "'n_embd ** 2'"}, "launch[0].block[0]", "Pow is not allowed"),
        ({"block": "'open(\"/etc/passwd\")'"}, "launch[0].block[0]", "only the functions"),
        ({"block": "1, 1, 1, 1"}, "launch[0].block", "1 to 3"),
        ({"launch_extra": "shared_bytes = '300 * 1024'"}, "launch[0].shared_bytes", "allowed 0..232448"),
        ({"launch_extra": "stream = 1"}, "launch[0].stream", "unknown key"),
        ({"launch_extra": "pdl = 1"}, "launch[0].pdl", "must be true or false"),
        ({"launch_extra": "pdl = 'yes'"}, "launch[0].pdl", "must be true or false"),
    ],
)
def test_slot_errors_name_file_slot_and_field(tree, kwargs, field, needle):
    message = refused(rmsnorm(tree, **kwargs))
    assert message.startswith(f"{tree / MANIFEST_NAME}: slot rmsnorm: {field}: "), message
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("../../etc/passwd", "'..' is refused"),
        ("src/../../../etc/passwd", "'..' is refused"),
        ("/etc/passwd", "absolute paths are refused"),
        ("src\\\\rmsnorm.cu", "plain '/'-separated"),
        ("src/missing.cu", "does not exist in the tree"),
        ("src", "is not a regular file"),
        ("include/common.cuh", "must be .cu or .ptx files"),
    ],
)
def test_source_paths_must_stay_in_the_tree(tree, source, needle):
    write(tree, RMSNORM.format(extra="", block="256", launch_extra="").replace("src/rmsnorm.cu", source))
    message = refused(tree)
    assert message.startswith(f"{tree / MANIFEST_NAME}: slot rmsnorm: source: ")
    assert needle in message


@pytest.mark.parametrize(
    "source",
    ["--options-file=opts/x.cu", "-Xcompiler=-fplugin=./evil.so.cu", "src/-run.cu", "src/--keep/rmsnorm.cu",
     "-"],
)
def test_source_path_parts_that_read_as_options_are_refused(tree, source):
    # The file exists, so only the leading '-' can be what is refused.
    (tree / source).parent.mkdir(parents=True, exist_ok=True)
    if source != "-":
        (tree / source).write_text((tree / "src" / "rmsnorm.cu").read_text())
    write(tree, RMSNORM.format(extra="", block="256", launch_extra="").replace("src/rmsnorm.cu", source))
    assert refused(tree) == (f"{tree / MANIFEST_NAME}: slot rmsnorm: source: {source!r}: a path part starting with "
                             "'-' is refused (the compiler would read it as an option)")


def test_include_dirs_that_read_as_options_are_refused(tree):
    (tree / "--options-file=include").mkdir()
    rmsnorm(tree)
    write(tree, (tree / MANIFEST_NAME).read_text().replace('include = ["include"]',
                                                           'include = ["include", "--options-file=include"]'))
    assert refused(tree).startswith(f"{tree / MANIFEST_NAME}: include[1]: '--options-file=include': a path part "
                                    "starting with '-' is refused")


@pytest.mark.parametrize("name", [r"src/a\nb.cu", r"src/a\u202eb.cu", r"src/a\u0007.cu", r"src/\u200bx.cu"])
def test_paths_with_control_or_invisible_characters_are_refused(tree, name):
    real = name.encode().decode("unicode_escape")  # the manifest spells the character as a TOML escape
    (tree / real).write_text("// a source\n")
    write(tree, RMSNORM.format(extra="", block="256", launch_extra="").replace("src/rmsnorm.cu", name))
    message = refused(tree)
    assert message.startswith(f"{tree / MANIFEST_NAME}: slot rmsnorm: source: {real!r}: the character ")
    assert "\n" not in message and "\u202e" not in message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("slots = " + "[" * 100_000 + "]" * 100_000,
         "line 2: nested deeper than 32 levels of arrays and inline tables"),
        ("slots = " + "{a = " * 40_000 + "1" + "}" * 40_000,
         "line 2: nested deeper than 32 levels of arrays and inline tables"),
        ("slots" + ".s" * 100_000 + " = 1", "line 2: a dotted key of more than 32 parts"),
    ],
    ids=["arrays", "inline-tables", "dotted-key"],
)
def test_nesting_bombs_are_a_manifest_error(tree, body, needle):
    assert refused(write(tree, "version = 1\n" + body + "\n")) == f"{tree / MANIFEST_NAME}: {needle}; refused"


def test_symlink_leading_out_of_the_tree_is_refused(tree, tmp_path):
    secret = tmp_path / "secret.cu"
    secret.write_text("// outside the tree\n")
    (tree / "src" / "escape.cu").symlink_to(secret)
    write(tree, RMSNORM.format(extra="", block="256", launch_extra="").replace("src/rmsnorm.cu", "src/escape.cu"))
    assert "symlink leading outside the tree; refused" in refused(tree)


def test_symlinked_include_dir_leading_out_is_refused(tree, tmp_path):
    (tree / "inc").symlink_to(tmp_path)
    rmsnorm(tree)
    write(tree, (tree / MANIFEST_NAME).read_text().replace('include = ["include"]', 'include = ["inc"]'))
    assert refused(tree) == (f"{tree / MANIFEST_NAME}: include[0]: 'inc' is a symlink leading outside the tree; "
                             "refused")


def test_manifest_itself_may_not_be_a_symlink_out(tree, tmp_path):
    outside = tmp_path / "outside.toml"
    outside.write_text((KERNELS / MANIFEST_NAME).read_text())
    (tree / MANIFEST_NAME).unlink()
    (tree / MANIFEST_NAME).symlink_to(outside)
    assert "symlink leading outside the tree" in refused(tree)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("version = 2\n", "version: must be 1, got 2"),
        ("[slots.rmsnorm]\n", "version: must be 1, got None"),
        ("version = 1\nextra = 3\n", "extra: unknown key"),
        ("version = 1\ninclude = ['../include']\n", "include[0]: '../include': '..' is refused"),
        ("version = 1\ninclude = ['src/rmsnorm.cu']\n", "include[0]: 'src/rmsnorm.cu' is not a directory"),
        ("version = 1\nslots = 3\n", "slots: must be a table"),
        ("version = [\n", "not valid TOML"),
        ("version = 1\n[slots.rmsnrom]\n", "slot rmsnrom: not a slot of ABI v0 (did you mean 'rmsnorm'?)"),
        ("version = 1\n[slots.rmsnorm]\nsource = 'src/rmsnorm.cu'\n", "slot rmsnorm: launch: missing"),
        ("version = 1\n[slots.rmsnorm]\n[[slots.rmsnorm.launch]]\n", "slot rmsnorm: source: missing"),
    ],
)
def test_file_level_errors_name_the_file_and_field(tree, text, needle):
    message = refused(write(tree, text))
    assert message.startswith(f"{tree / MANIFEST_NAME}: ")
    assert needle in message


def test_launch_count_and_kernel_names_are_checked(tree):
    two = RMSNORM.format(extra="", block="256", launch_extra="") + """
[[slots.rmsnorm.launch]]
kernel = "second"
grid = [1]
block = [32]
"""
    assert "slot rmsnorm: launch: slot rmsnorm allows at most 1 launches, got 2" in refused(write(tree, two))
    bad_name = RMSNORM.format(extra="", block="256", launch_extra="").replace('"rmsnorm_f32"', '"rms norm;"')
    assert "launch[0].kernel: must be the kernel's symbol name" in refused(write(tree, bad_name))


def test_missing_manifest_is_a_clear_error(tmp_path):
    assert refused(tmp_path) == f"{tmp_path / MANIFEST_NAME}: 'kernels.toml' does not exist in the tree"


def test_oversized_manifest_is_refused(tree):
    write(tree, "version = 1\n" + "# padding\n" * 40000)
    assert "larger than" in refused(tree)


def test_unreadable_bytes_are_a_clear_error(tree):
    (tree / MANIFEST_NAME).write_bytes(b"version = 1\n\xff\xfe")
    assert "cannot read" in refused(tree)


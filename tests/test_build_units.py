"""The build's pure parts: bounded capture, log reading, cubin symbols, cache keys and entries, staging."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from evalbot.build import diagnostics
from evalbot.build.backend import make_backend
from evalbot.build.cache import BuildCache, slot_key
from evalbot.build.capture import LogCapture
from evalbot.build.cubin import CubinError, entry_kernels
from evalbot.build.nvcc import ArchError, compile_argv, require_arch
from evalbot.build.staging import stage_slot
from evalbot.errors import EvalbotError
from evalbot.manifest import ManifestError, load_manifest
from reference_runtime.runtime.abi import header_path
from tests.build_support import KERNELS, make_config, require_nvcc, tree_with


def test_capture_keeps_the_head_and_reports_overflow():
    capture = LogCapture(10)
    assert capture.feed(b"12345")
    assert capture.feed(b"67890")
    assert not capture.overflowed
    assert not capture.feed(b"X")
    assert capture.overflowed and capture.total == 11
    assert capture.text().startswith("1234567890\n[evalbot: output cut at the 10-byte log limit")


def test_capture_decodes_invalid_utf8_without_failing():
    capture = LogCapture(100)
    capture.feed(b"bad \xff byte")
    assert capture.text() == "bad \ufffd byte"


@pytest.mark.parametrize(
    ("log", "first"),
    [
        ('note\nsrc/a.cu(3): error: identifier "x" is undefined\nsrc/a.cu(4): error: y\n',
         'src/a.cu(3): error: identifier "x" is undefined'),
        ("src/a.cu:1:10: fatal error: b.h: No such file or directory\n",
         "src/a.cu:1:10: fatal error: b.h: No such file or directory"),
        ("nvcc fatal   : Unsupported gpu architecture 'sm_1'\n", "nvcc fatal   : Unsupported gpu architecture 'sm_1'"),
        ("ptxas error   : Entry function 'k' uses too much shared data\n",
         "ptxas error   : Entry function 'k' uses too much shared data"),
        ("src/a.cu(2): error #20-D: identifier \"q\" is undefined\n", "src/a.cu(2): error #20-D: identifier \"q\" is "
                                                                       "undefined"),
        ("src/a.cu:1:2: warning: #warning x [-Wcpp]\n", None),
    ],
)
def test_first_error_line(log, first):
    assert diagnostics.first_error_line(log) == first


def test_first_error_line_is_shortened():
    line = "a.cu(1): error: " + "x" * 1000
    assert len(diagnostics.first_error_line(line)) == diagnostics.MAX_REASON


def test_trim_starts_at_the_first_error_and_caps_lines():
    log = "\n".join(["warning: w"] * 5 + ["a.cu(1): error: e"] + [f"ctx {i}" for i in range(100)])
    trimmed = diagnostics.trim(log, max_lines=10)
    assert trimmed.splitlines()[0] == "a.cu(1): error: e"
    assert trimmed.splitlines()[-1] == "[... 96 more lines in the full log ...]"


def test_cubin_entry_kernels_from_a_real_compile(tmp_path):
    require_nvcc()
    out = tmp_path / "k.cubin"
    source = tmp_path / "k.cu"
    source.write_text('extern "C" __global__ void alpha(float* x) { x[0] = 1; }\n'
                      '__device__ __noinline__ float helper(float v) { return v * 2; }\n'
                      '__global__ void beta(float* x) { x[0] = helper(x[1]); }\n')
    subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "-o", str(out), str(source)], check=True)
    names = entry_kernels(out.read_bytes())
    assert "alpha" in names
    assert any(n.startswith("_Z4betaPf") for n in names)  # C++ linkage: mangled
    assert not any("helper" in n for n in names)  # device functions are not entries


@pytest.mark.parametrize(
    "data", [b"", b"MZ\x90\x00", b"\x7fELF\x02\x01" + b"\x00" * 10, b"\x7fELF\x01\x01" + b"\0" * 60])
def test_malformed_cubin_is_a_clear_error(data):
    with pytest.raises(CubinError):
        entry_kernels(data)


def _key(**changes: object) -> str:
    args: dict[str, object] = {"source": "src/rmsnorm.cu", "flags": (), "include": ("include",),
                               "digests": {"src/rmsnorm.cu": "a" * 64}, "arch": "sm_90", "toolchain": "nvcc 13.0"}
    args.update(changes)
    return slot_key(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"source": "src/other.cu"}, {"flags": ("-use_fast_math",)}, {"include": ()},
        {"digests": {"src/rmsnorm.cu": "b" * 64}}, {"digests": {"src/rmsnorm.cu": "a" * 64, "include/x.h": "c" * 64}},
        {"arch": "sm_120"}, {"toolchain": "nvcc 13.1"},
    ],
)
def test_cache_key_covers_every_input(change):
    assert _key(**change) != _key()
    assert _key() == _key()


def test_cache_entries_are_atomic_and_races_are_harmless(tmp_path):
    cache = BuildCache(tmp_path)
    key = "ab" * 32
    assert cache.get(key) is None
    errors: list[BaseException] = []

    def put() -> None:
        try:
            cache.put(key, b"cubin-bytes", {"slot": "x"})
        except BaseException as exc:  # recorded for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    hit = cache.get(key)
    assert hit is not None and hit.read_bytes() == b"cubin-bytes"
    assert [p.name for p in hit.parent.parent.iterdir()] == [key]  # no temporary directories left


def test_staging_copies_only_the_slot_source_and_include_files(tmp_path):
    root = tree_with(tmp_path)
    (root / "include" / "alias.cuh").symlink_to("common.cuh")
    (root / "notes.txt").write_text("not visible\n")
    manifest = load_manifest(root)
    dest = tmp_path / "stage"
    digests = stage_slot(manifest, manifest.slots["gemv_f32"], dest)
    assert sorted(digests) == [".evalbot-abi/evalbot_slots.h", "include/alias.cuh", "include/common.cuh",
                               "src/gemv_f32.cu"]
    assert (dest / ".evalbot-abi" / "evalbot_slots.h").read_bytes() == header_path().read_bytes()
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == sorted(digests)
    assert not (dest / "include" / "alias.cuh").is_symlink()
    assert (dest / "include" / "alias.cuh").read_text() == (root / "include" / "common.cuh").read_text()
    assert (dest / "src").stat().st_mode & 0o777 == 0o755


def test_staging_refuses_links_out_of_the_tree_inside_include_dirs(tmp_path):
    root = tree_with(tmp_path)
    (root / "include" / "leak.cuh").symlink_to("/etc/passwd")
    manifest = load_manifest(root)
    with pytest.raises(ManifestError, match=r"include\[0\]: 'include/leak.cuh' is a symlink leading outside the tree"):
        stage_slot(manifest, manifest.slots["rmsnorm"], tmp_path / "stage")


def test_the_abi_header_directory_is_reserved(tmp_path):
    root = tree_with(tmp_path)
    (root / ".evalbot-abi").mkdir()
    (root / ".evalbot-abi" / "evalbot_slots.h").write_text("// a contributor's own copy\n")
    (root / "kernels.toml").write_text((root / "kernels.toml").read_text().replace(
        'include = ["include"]', 'include = ["include", ".evalbot-abi"]'))
    manifest = load_manifest(root)
    with pytest.raises(ManifestError, match=r"'\.evalbot-abi' is reserved for the slot ABI header"):
        stage_slot(manifest, manifest.slots["rmsnorm"], tmp_path / "stage")


def test_staging_refuses_directory_links(tmp_path):
    root = tree_with(tmp_path)
    (root / "include" / "more").symlink_to("../src")
    manifest = load_manifest(root)
    with pytest.raises(ManifestError, match="'include/more' is a directory symlink"):
        stage_slot(manifest, manifest.slots["rmsnorm"], tmp_path / "stage")


def test_nvcc_command_line():
    argv = compile_argv("src/a.cu", "/job/out/a.cubin", "sm_90a", ("include",), ("-use_fast_math", "-DTILE=64"))
    assert argv == ["nvcc", "-cubin", "-arch=sm_90a", "-I./include", "-use_fast_math", "-DTILE=64",
                    "-o", "/job/out/a.cubin", "./src/a.cu"]
    with pytest.raises(EvalbotError, match="GPU arch 'compute_90'"):
        compile_argv("a.cu", "o", "compute_90", (), ())


@pytest.mark.parametrize(
    ("source", "include"),
    [("--options-file=opts/x.cu", ()), ("src/-Xcompiler=-fplugin=p.cu", ()), ("/etc/passwd.cu", ()),
     ("src/../../x.cu", ()), ("a.cu", ("-Iinclude",)), ("a.cu", ("inc/--keep",))],
)
def test_nvcc_command_line_refuses_paths_that_could_read_as_options(source, include):
    with pytest.raises(EvalbotError, match="cannot go on the compiler's command line"):
        compile_argv(source, "o.cubin", "sm_90", include, ())


def test_nvcc_takes_an_options_file_argument_as_an_option_but_not_behind_dot_slash(tmp_path):
    """Why the source goes on the command line as ./path: the same name, bare, is an nvcc option."""
    require_nvcc()
    (tmp_path / "opts").mkdir()
    (tmp_path / "opts" / "x.cu").write_text("--version\n")  # an options file: nvcc would print its version
    planted = tmp_path / "--options-file=opts"
    planted.mkdir()
    (planted / "x.cu").write_text('extern "C" __global__ void k(float* x) { x[0] = 1; }\n')
    bare = subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "-o", "bare.cubin", "--options-file=opts/x.cu"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert "Cuda compilation tools" in bare.stdout and not (tmp_path / "bare.cubin").exists()
    argv = ["nvcc", "-cubin", "-arch=sm_90", "-o", "safe.cubin", "./--options-file=opts/x.cu"]
    safe = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    assert safe.returncode == 0, safe.stderr
    assert "Cuda compilation tools" not in safe.stdout
    assert entry_kernels((tmp_path / "safe.cubin").read_bytes()) == {"k"}


def test_the_backends_nvcc_is_asked_about_the_exact_arch(tmp_path):
    require_nvcc()
    backend = make_backend(make_config(tmp_path, backend="local").build)
    for arch in ("sm_90", "sm_90a", "sm_120"):
        require_arch(backend, arch)
    for arch, why in (("sm_99", "Unsupported gpu architecture 'sm_99'"),
                      ("sm_90f", "Unsupported gpu architecture 'sm_90f'")):
        with pytest.raises(ArchError) as info:
            require_arch(backend, arch)
        message = str(info.value)
        assert message.startswith(f"the local build backend's nvcc cannot build for {arch}: nvcc fatal   : {why}; ")
        assert " sm_90 " in message and " sm_120 " in message  # what it can build for, from --list-gpu-code


@pytest.mark.parametrize(
    ("name", "shown", "bad"),
    [(b"evil\n### evalbot: XL.cuh", "evil\\n### evalbot: XL.cuh", "\\n"),
     (b"not-utf8-\xff.cuh", "not-utf8-\\udcff.cuh", "\\udcff"),
     (b"rtl-\xe2\x80\xaeh.cuc", "rtl-\\u202eh.cuc", "\\u202e")],
    ids=["newline", "not-utf-8", "bidi-override"],
)
def test_staging_refuses_file_names_that_do_not_print_plainly(tmp_path, name, shown, bad):
    root = tree_with(tmp_path)
    (root / "include" / "-harmless.cuh").write_text("// only ever #included\n")
    manifest = load_manifest(root)
    assert "include/-harmless.cuh" in stage_slot(manifest, manifest.slots["rmsnorm"], tmp_path / "ok")
    (root / "include" / os.fsdecode(name)).write_text("// a name that prints as something else\n")
    with pytest.raises(ManifestError) as info:
        stage_slot(manifest, manifest.slots["rmsnorm"], tmp_path / "stage")
    assert str(info.value) == (f"{root / 'kernels.toml'}: include[0]: 'include/{shown}': the character '{bad}' "
                               "is refused in paths")
    assert str(info.value).isprintable()


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(EvalbotError, match=r"\[build\] jobs must be at least 1"):
        make_backend(make_config(tmp_path, jobs=0).build)


def test_bad_arch_is_refused_before_building(tmp_path):
    from evalbot.build.builder import build_tree

    with pytest.raises(EvalbotError, match="is not of the form sm_90"):
        build_tree(KERNELS, make_config(tmp_path, backend="local"), "sm90")

"""`python -m aloop` and `import aloop`.

On the aloop side a script runs as `python -m aloop script.py args...`; on
the asyncio side the same script runs as `python script.py args...`.  Both
must behave alike, except for the loop type the script sees.
"""

import json
import os
import re
import textwrap

import pytest

from _aloop_support import describe, import_aloop, run_child

PROBE = textwrap.dedent(
    """\
    import asyncio, json, sys

    def describe(loop):
        t = type(loop)
        return f"{t.__module__}.{t.__qualname__}"

    async def main():
        return describe(asyncio.get_running_loop())

    report = {
        "name": __name__,
        "argv": sys.argv,
        "run": asyncio.run(main()),
    }
    loop = asyncio.new_event_loop()
    report["new_event_loop"] = describe(loop)
    loop.close()
    loop = asyncio.get_event_loop_policy().new_event_loop()
    report["policy_new_event_loop"] = describe(loop)
    asyncio.set_event_loop(loop)
    report["get_event_loop"] = describe(asyncio.get_event_loop())
    asyncio.set_event_loop(None)
    loop.close()
    print(json.dumps(report))
    """
)


def expected_loop_prefix(kind):
    return "aloop." if kind == "aloop" else "asyncio."


def run_script(kind, script, args=(), cwd=None, env=None):
    if kind == "aloop":
        cmd = ["-m", "aloop", str(script), *args]
    else:
        cmd = [str(script), *args]
    return run_child(kind, args=cmd, cwd=cwd, env=env)


def run_module(kind, module, args=(), cwd=None, env=None):
    if kind == "aloop":
        cmd = ["-m", "aloop", "-m", module, *args]
    else:
        cmd = ["-m", module, *args]
    return run_child(kind, args=cmd, cwd=cwd, env=env)


def check_report(kind, report):
    prefix = expected_loop_prefix(kind)
    for key in ("run", "new_event_loop", "policy_new_event_loop",
                "get_event_loop"):
        assert report[key].startswith(prefix), (key, report)
    assert report["name"] == "__main__"


def test_run_script(loop_kind, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = run_script(loop_kind, script, ["a", "--flag", "b c"],
                      cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    report = json.loads(proc.stdout)
    check_report(loop_kind, report)
    assert report["argv"] == [str(script), "a", "--flag", "b c"]


def test_run_script_relative_path(loop_kind, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    proc = run_script(loop_kind, "probe.py", ["x"], cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    report = json.loads(proc.stdout)
    check_report(loop_kind, report)
    assert report["argv"] == ["probe.py", "x"]


def test_run_script_imports_sibling_module(loop_kind, tmp_path):
    # Like `python script.py`, the script's directory is importable.
    pkg = tmp_path / "app"
    pkg.mkdir()
    (pkg / "helper.py").write_text("VALUE = 'from-helper'\n")
    (pkg / "main.py").write_text(
        "import helper, sys\nprint(helper.VALUE)\n")
    proc = run_script(loop_kind, pkg / "main.py", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.split() == ["from-helper"], describe(proc)


def test_run_module(loop_kind, tmp_path):
    (tmp_path / "probe_mod.py").write_text(PROBE)
    proc = run_module(loop_kind, "probe_mod", ["x", "-y"], cwd=tmp_path,
                      env={"PYTHONPATH": str(tmp_path) + os.pathsep
                           + os.environ.get("PYTHONPATH", "")})
    assert proc.returncode == 0, describe(proc)
    report = json.loads(proc.stdout)
    check_report(loop_kind, report)
    assert report["argv"][1:] == ["x", "-y"]
    assert os.path.samefile(report["argv"][0], tmp_path / "probe_mod.py")


def test_run_package_main(loop_kind, tmp_path):
    pkg = tmp_path / "probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(PROBE)
    proc = run_module(loop_kind, "probe_pkg", ["arg"], cwd=tmp_path,
                      env={"PYTHONPATH": str(tmp_path) + os.pathsep
                           + os.environ.get("PYTHONPATH", "")})
    assert proc.returncode == 0, describe(proc)
    report = json.loads(proc.stdout)
    check_report(loop_kind, report)
    assert report["argv"][1:] == ["arg"]


def test_script_exit_code(loop_kind, tmp_path):
    script = tmp_path / "exit3.py"
    script.write_text(textwrap.dedent("""\
        import asyncio, sys
        async def main():
            sys.exit(3)
        asyncio.run(main())
        """))
    proc = run_script(loop_kind, script)
    assert proc.returncode == 3, describe(proc)


def test_script_exception(loop_kind, tmp_path):
    script = tmp_path / "boom.py"
    script.write_text(textwrap.dedent("""\
        import asyncio
        async def main():
            raise LookupError("boom from script")
        asyncio.run(main())
        """))
    proc = run_script(loop_kind, script)
    assert proc.returncode == 1, describe(proc)
    assert "LookupError: boom from script" in proc.stderr, describe(proc)
    assert "Traceback" in proc.stderr


def test_script_stdin(loop_kind, tmp_path):
    script = tmp_path / "echo.py"
    script.write_text("import sys\nsys.stdout.write(sys.stdin.read()[::-1])\n")
    proc = run_child(
        loop_kind,
        args=(["-m", "aloop"] if loop_kind == "aloop" else []) + [str(script)],
        input="abc")
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "cba"


# ---------------------------------------------------------------- aloop CLI


def test_version():
    aloop = import_aloop()
    proc = run_child("aloop", args=["-m", "aloop", "--version"])
    assert proc.returncode == 0, describe(proc)
    assert aloop.__version__ in proc.stdout, describe(proc)


def test_version_attribute():
    aloop = import_aloop()
    assert isinstance(aloop.__version__, str)
    assert re.match(r"^\d+\.\d+", aloop.__version__), aloop.__version__


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(flag):
    import_aloop()
    proc = run_child("aloop", args=["-m", "aloop", flag])
    assert proc.returncode == 0, describe(proc)
    out = proc.stdout.lower()
    assert "usage" in out, describe(proc)
    assert "-m" in out


def test_missing_script_fails():
    import_aloop()
    proc = run_child("aloop", args=["-m", "aloop", "/nonexistent/x.py"])
    assert proc.returncode != 0, describe(proc)


# ---------------------------------------------------------------- import


def test_import_has_no_deprecation_warning(loop_kind):
    module = "aloop" if loop_kind == "aloop" else "asyncio"
    proc = run_child(
        loop_kind,
        args=["-W", "error::DeprecationWarning", "-W",
              "error::PendingDeprecationWarning", "-c",
              f"import {module}; print('ok')"])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.split() == ["ok"]


def test_public_api():
    aloop = import_aloop()
    import asyncio

    for name in ("Loop", "new_event_loop", "run", "EventLoopPolicy",
                 "install", "__version__"):
        assert hasattr(aloop, name), name
    assert issubclass(aloop.Loop, asyncio.AbstractEventLoop)
    assert issubclass(aloop.Loop, asyncio.SelectorEventLoop)
    assert issubclass(aloop.EventLoopPolicy, asyncio.DefaultEventLoopPolicy)
    loop = aloop.new_event_loop()
    try:
        assert type(loop) is aloop.Loop
    finally:
        loop.close()


def test_loop_class_direct_construction():
    aloop = import_aloop()
    loop = aloop.Loop()
    try:
        assert not loop.is_closed()
        assert loop.run_until_complete(_answer()) == 42
    finally:
        loop.close()


async def _answer():
    return 42


def test_loop_repr_like_stdlib(loop):
    r = repr(loop)
    assert r.startswith("<") and r.endswith(">"), r
    assert "running=False" in r and "closed=False" in r, r
    assert f"debug={loop.get_debug()}" in r, r
    loop.close()
    assert "closed=True" in repr(loop)


def test_unmodified_program_under_dev_mode(loop_kind, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    args = ["-X", "dev", "-W", "error::ResourceWarning"]
    if loop_kind == "aloop":
        args += ["-m", "aloop"]
    proc = run_child(loop_kind, args=args + [str(script)])
    assert proc.returncode == 0, describe(proc)
    check_report(loop_kind, json.loads(proc.stdout))
    assert "Warning" not in proc.stderr, describe(proc)


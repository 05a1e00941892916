import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "searchplay", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": __import__("os").environ["HOME"]},
    )


def test_help_lists_commands() -> None:
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for command in ("assets", "config", "index", "demo"):
        assert command in out.stdout


def test_config_show_prints_resolved_toml() -> None:
    out = run_cli("config", "show", "--set", "search.topk=9")
    assert out.returncode == 0, out.stderr
    assert "topk = 9" in out.stdout and "[search]" in out.stdout


def test_config_error_is_one_clear_line() -> None:
    out = run_cli("config", "show", "--set", "search.bogus=1")
    assert out.returncode == 2
    assert "unknown key 'search.bogus'" in out.stderr
    assert "Traceback" not in out.stderr

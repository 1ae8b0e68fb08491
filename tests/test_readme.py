"""The README runs as written (issue 27).

A new user copies the README's blocks into a plain shell, with no
environment activated, after its set-up block. So every command of its
shell blocks must name an executable that exists after the set-up
(``.venv/bin/...``), each ``dsolo-sk`` line must parse, and the block of
the main job without weights must run exactly as written and write its
pictures; the README's Python demo, saved as a script and run, must write
its picture too.

``.venv`` is the clone's own environment, the one the README's set-up
command creates (and ``.ci/run`` reuses); in a checkout without one that
runs on another checkout's ``.venv`` (a git worktree), that one. Under
tox, whose environments are not ``.venv``, the tests that need it skip.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Shell words a block may use without an executable of the environment.
BUILTINS = {"cd", "export"}
SETUP = "Set-up"
MAIN_JOB = "The main job without weights"


def blocks(text=None, language="bash"):
    """(section heading, code) of each fenced block of `language`."""
    text = README.read_text(encoding="utf-8") if text is None else text
    out, heading = [], None
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("```"):
            code = []
            for inner in lines:
                if inner.strip() == "```":
                    break
                code.append(inner)
            if line[3:].strip() == language:
                out.append((heading, "\n".join(code)))
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return out


def commands(code):
    """The commands of a shell block: comments dropped, continued lines
    joined, split at ``&&``, ``||``, ``;`` and ``|``; each a list of
    words."""
    code = code.replace("\\\n", " ")
    out = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        command = []
        for word in words + ["&&"]:
            if word in ("&&", "||", ";", "|"):
                if command:
                    out.append(command)
                command = []
            else:
                command.append(word)
    return out


def venv():
    """The folder ``.venv`` names, or None (see the module docstring)."""
    own = ROOT / ".venv"
    if (own / "bin").is_dir():
        return own
    prefix = Path(sys.prefix)
    if prefix.name == ".venv" and sys.prefix != sys.base_prefix:
        return prefix
    return None


def _need_venv():
    env = venv()
    if env is None:
        pytest.skip("no .venv: the README's commands run after its set-up "
                    "command, which creates .venv in the clone (tox's "
                    "environments are not .venv)")
    return env


def problems(text, env):
    """What is wrong with the shell blocks of the README text `text`,
    `env` standing for ``.venv``."""
    import importlib.util

    from dsolo_sk.cli import build_parser

    found = []
    for heading, code in blocks(text):
        for words in commands(code):
            exe, args = words[0], words[1:]
            where = f"{heading!r}: {' '.join(words)!r}"
            if exe in BUILTINS:
                continue
            if not exe.startswith(".venv/bin/"):
                if heading != SETUP:  # the set-up's own python3.11
                    found.append(f"{where} names {exe!r}, which a plain "
                                 "shell without the environment activated "
                                 f"does not find: write .venv/bin/{exe}")
                continue
            path = env / exe[len(".venv/"):]
            if not os.access(path, os.X_OK):
                found.append(f"{where}: {path} does not exist after set-up")
                continue
            name = Path(exe).name
            if name == "dsolo-sk":
                try:
                    build_parser().parse_args(args)
                except SystemExit:
                    found.append(f"{where}: dsolo-sk does not take these "
                                 "arguments")
            elif name.startswith("python") and args:
                if args[0] == "-m":
                    if importlib.util.find_spec(args[1]) is None:
                        found.append(f"{where}: no module {args[1]!r}")
                elif not (ROOT / args[0]).is_file():
                    found.append(f"{where}: no file {args[0]!r} in the "
                                 "clone")
    return found


def test_every_shell_block_names_what_exists_after_set_up():
    env = _need_venv()
    assert [h for h, _ in blocks()].count(SETUP) == 1
    assert [h for h, _ in blocks()].count(MAIN_JOB) == 1
    assert problems(None, env) == []


def test_the_check_finds_a_bare_command():
    """What the README of issue 27 had: ``dsolo-sk demo --out demo``
    answers 'command not found' in a plain shell."""
    env = _need_venv()
    text = (f"## {MAIN_JOB}\n\n```bash\ndsolo-sk demo --out demo\n```\n"
            "## Docs\n\n```bash\n.venv/bin/dsolo-sk demo --no-such-flag\n"
            ".venv/bin/python benchmarks/no_such_script.py\n```\n")
    found = problems(text, env)
    assert len(found) == 3, found
    assert "write .venv/bin/dsolo-sk" in found[0]


def _plain_env(env):
    """The environment of a plain shell: no virtual environment on the
    PATH or activated. PYTHONPATH stays, for a worktree whose tests run on
    another checkout's environment."""
    out = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX")}
    bins = {os.path.realpath(env / "bin"),
            os.path.realpath(os.path.dirname(sys.executable))}
    out["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and os.path.realpath(p) not in bins)
    return out


def test_the_main_job_block_runs_as_written(tmp_path):
    """The block copied into a plain shell, in a folder where ``.venv`` is
    the environment (as in the clone), exits 0 and writes the overlays
    into the folder it names."""
    env = _need_venv()
    [code] = [c for h, c in blocks() if h == MAIN_JOB]
    (tmp_path / ".venv").symlink_to(env, target_is_directory=True)
    proc = subprocess.run(["bash", "-c", code], cwd=tmp_path,
                          env=_plain_env(env), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    pngs = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert pngs == ["coffee_kl.png", "coffee_path.png", "coffee_raw.png",
                    "coffee_velocity.png"], (pngs, proc.stdout)
    # the README says where they are
    [folder] = {p.parent for p in tmp_path.rglob("*.png")}
    text = README.read_text(encoding="utf-8")
    assert f"`{folder.relative_to(tmp_path)}/`" in text


def test_the_demo_writes_into_a_folder_git_ignores():
    """Run inside the clone, the demo's default output folder is one git
    ignores, so it leaves no untracked files."""
    from dsolo_sk.cli import build_parser

    out = build_parser().parse_args(["demo"]).out
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q",
                           f"{out}/coffee_velocity.png"])
    assert proc.returncode == 0, f"git does not ignore {out}/"


def test_the_python_demo_writes_a_picture(tmp_path):
    """The README's Python demo (the block with the colour stand-in),
    saved as a script and run, writes the image file it names."""
    [code] = [c for _, c in blocks(language="python")
              if "ColorPrototypeLogits" in c]
    last = code.strip().splitlines()
    assert any("save_overlay(" in line for line in last[-2:]), last[-2:]
    script = tmp_path / "demo.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [name] = re.findall(r'save_overlay\("([^"]+)"', code)
    from PIL import Image

    with Image.open(tmp_path / name) as im:
        assert im.size[0] > 400 and im.size[1] > 300
    assert name in proc.stdout  # it says where


def test_one_title_for_the_offline_page():
    """The package and the README name the page by its title, and with
    its path wherever they name it."""
    page = ROOT / "docs" / "user_guide" / "weights.rst"
    title = next(line for line in page.read_text(encoding="utf-8")
                 .splitlines() if line.strip() and not line.startswith("..")
                 and set(line.strip()) != {"="})
    assert title == "Weights and offline use"
    texts = {README: README.read_text(encoding="utf-8")}
    for path in sorted((ROOT / "dsolo_sk").rglob("*.py")):
        texts[path] = path.read_text(encoding="utf-8")
    wrong, pathless = [], []
    other = re.compile(r"(?i)offline use and local weights|local weights "
                       r"and offline use|offline (guide|page)")
    for path, text in texts.items():
        wrong += [f"{path.name}: {m.group()}" for m in other.finditer(text)]
        for m in re.finditer(re.escape(title), text):
            near = " ".join(text[m.end():m.end() + 120].split())
            if "docs/user_guide/weights.rst" not in near:
                pathless.append(f"{path.name}: {near[:60]}")
    assert not wrong, wrong
    assert not pathless, pathless

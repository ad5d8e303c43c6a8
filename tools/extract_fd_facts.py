"""Write one FastDeploy release line's facts fixture (`patches/releases/fd-<line>.json`) from its sources.

Reads the target modules with `ast` (fastdeploy_cudagraph_ext.fd_facts), from a git directory at a
commit (`git show`) or from a source checkout; never imports FastDeploy and stores no FastDeploy code.

    python tools/extract_fd_facts.py --git-dir DIR --ref SHA --line 2.4 --repository owner/FastDeploy --branch release/2.4
    python tools/extract_fd_facts.py --src DIR --line local --repository owner/FastDeploy --commit SHA --date ISO
    python tools/extract_fd_facts.py --all --mirrors DIR    # every line in RELEASES below (DIR/gongshaotian+FastDeploy/repo)
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fastdeploy_cudagraph_ext.fd_facts import TARGET_MODULES, facts_to_json, module_facts  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent.parent / "patches" / "releases"
INSTALL_DOC = "docs/get_started/installation/nvidia_gpu.md"
_PADDLE_PIN = re.compile(r"paddlepaddle-gpu==([0-9][0-9a-z.]*[0-9a-z])")


@dataclass(frozen=True)
class Release:
    line: str
    repository: str  # the fork whose mirror holds the upstream commit
    branch: str  # the upstream branch the commit is on
    commit: str


# The newest upstream (GitHub-merged, PR-numbered) commit of each line found in the fork mirrors
# (how they were chosen: patches/README.md).
RELEASES = (
    Release("2.2.0", "gongshaotian/FastDeploy", "release/2.2", "fa2369271d553ab3f66d7f13cf8e50281d4940e4"),
    Release("2.2.x", "gongshaotian/FastDeploy", "feature/experimental_feature_20250908 (from release/2.2)",
            "b3031d232428972a677f49454a4564e7e54c08c1"),
    Release("2.3", "gongshaotian/FastDeploy", "release/2.3", "0df488c7bbfd831c3c0f716ba7e2a7774f6e9050"),
    Release("2.4", "gongshaotian/FastDeploy", "release/2.4", "f83673daac0a495afe239bc31d43a3f3398fb035"),
    Release("2.5", "gongshaotian/FastDeploy", "release/2.5", "f3fb7e032cad403061258cfb0a2b5e228ac31465"),
    Release("2.6", "gongshaotian/FastDeploy", "release/2.6", "7198b5883a0ebdc85b91a455aa07d0856911c9a7"),
    Release("develop", "gongshaotian/FastDeploy", "develop", "c1b7c083da606ed7f3ac35c2f905dc904f1163b2"),
)


class ToolError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def _git(git_dir: Path, *args: str) -> str | None:
    done = subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def git_reader(git_dir: Path, ref: str) -> Callable[[str], str | None]:
    if _git(git_dir, "rev-parse", "--git-dir") is None:
        raise ToolError(f"{git_dir} is not a git directory; pass the mirror's repo folder (e.g. .../repo)")
    if _git(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") is None:
        raise ToolError(f"{ref!r} is not a commit in {git_dir}; check the sha or branch name")
    return lambda path: _git(git_dir, "show", f"{ref}:{path}")


def dir_reader(root: Path) -> Callable[[str], str | None]:
    if not (root / "fastdeploy").is_dir():
        raise ToolError(f"{root} has no fastdeploy/ folder; pass the checkout's top folder")
    return lambda path: (root / path).read_text(encoding="utf-8") if (root / path).is_file() else None


def setup_version(setup_py: str | None) -> str:
    """FASTDEPLOY_VERSION's default in setup.py (`os.environ.get("FASTDEPLOY_VERSION", "<version>")`)."""
    for node in ast.walk(ast.parse(setup_py or "")):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FASTDEPLOY_VERSION"
                                                for t in node.targets):
            value = node.value.args[-1] if isinstance(node.value, ast.Call) and node.value.args else node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    raise ToolError("setup.py has no FASTDEPLOY_VERSION default; is this a FastDeploy 2.x tree?")


def modules_facts(read: Callable[[str], str | None]) -> tuple[dict, list[str]]:
    """(facts of the target modules present, names of those absent)."""
    found, absent = {}, []
    for module in TARGET_MODULES:
        base = module.replace(".", "/")
        source = read(base + ".py") or read(base + "/__init__.py")
        if source is None:
            absent.append(module)
        else:
            found[module] = module_facts(source)
    return found, absent


def fixture(line: str, read: Callable[[str], str | None], source: dict) -> dict:
    facts, absent = modules_facts(read)
    pin = _PADDLE_PIN.search(read(INSTALL_DOC) or "")
    return {
        "release_line": line,
        "fastdeploy_version": setup_version(read("setup.py")),  # setup.py's default string at that commit
        "paddlepaddle_gpu": pin.group(1) if pin else "unknown",
        "paddlepaddle_gpu_source": INSTALL_DOC,  # the version its installation guide tells operators to install
        "source": source,
        "absent_modules": absent,
        "modules": facts_to_json(facts),
    }


def from_git(git_dir: Path, ref: str, line: str, repository: str, branch: str) -> dict:
    read = git_reader(git_dir, ref)
    sha, date, subject = (_git(git_dir, "log", "-1", "--format=%H%n%cI%n%s", ref) or "").split("\n", 2)
    source = {"repository": repository, "upstream_branch": branch, "commit": sha, "date": date,
              "subject": subject.strip()}
    return fixture(line, read, source)


def write(data: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"fd-{data['release_line']}.json"
    text = json.dumps(data, indent=1)
    # one line per parameter list: a newline cannot occur inside a JSON string, so this touches only layout
    text = re.sub(r"\[\n\s*((?:\"[^\"\n]*\",\n\s*)*\"[^\"\n]*\")\n\s*\]",
                  lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--git-dir", type=Path)
    parser.add_argument("--ref")
    parser.add_argument("--src", type=Path)
    parser.add_argument("--line", help="release line name: 2.2.0, 2.2.x, 2.3, ..., develop")
    parser.add_argument("--repository", default="unknown", help="owner/name of the repository read")
    parser.add_argument("--branch", default="unknown", help="upstream branch the commit is on")
    parser.add_argument("--commit", default="unknown", help="with --src: the commit the checkout is at")
    parser.add_argument("--date", default="unknown", help="with --src: that commit's date")
    parser.add_argument("--all", action="store_true", help="regenerate every line in RELEASES from --mirrors")
    parser.add_argument("--mirrors", type=Path, help="folder holding <owner>+<name>/repo git mirrors")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    try:
        if args.all:
            if args.mirrors is None:
                raise ToolError("--all needs --mirrors DIR (the folder with <owner>+FastDeploy/repo)")
            for release in RELEASES:
                git_dir = args.mirrors / release.repository.replace("/", "+") / "repo"
                data = from_git(git_dir, release.commit, release.line, release.repository, release.branch)
                print(write(data, args.out))
            return 0
        if not args.line:
            raise ToolError("name the release line with --line (e.g. --line 2.4)")
        if args.git_dir is not None and args.ref:
            data = from_git(args.git_dir, args.ref, args.line, args.repository, args.branch)
        elif args.src is not None:
            source = {"repository": args.repository, "upstream_branch": args.branch, "commit": args.commit,
                      "date": args.date, "subject": "source checkout"}
            data = fixture(args.line, dir_reader(args.src), source)
        else:
            raise ToolError("give either --git-dir DIR --ref SHA, or --src DIR, or --all --mirrors DIR")
        print(write(data, args.out))
        return 0
    except ToolError as error:
        print(f"extract_fd_facts: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The READMEs' examples work as written: every YAML block passes `config check`, and the shell
examples keep each sample dataset in a store of its own."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_inprocess import invoke

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", *sorted(REPO.glob("connectors/*/README.md"))]


def blocks(path: Path, language: str) -> list[tuple[int, str]]:
    """Each fenced block of ``language`` in ``path``: the line it starts on, and its text."""
    found = []
    text = path.read_text()
    for match in re.finditer(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        found.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return found


YAML_BLOCKS = [
    (f"{path.relative_to(REPO)}:{line}", text) for path in READMES for line, text in blocks(path, "ya?ml")
]


def test_every_readme_has_its_examples_found() -> None:
    assert {where.split(":")[0] for where, _ in YAML_BLOCKS} == {str(p.relative_to(REPO)) for p in READMES}


@pytest.mark.parametrize(("where", "text"), YAML_BLOCKS, ids=[where for where, _ in YAML_BLOCKS])
def test_every_yaml_example_passes_config_check(where: str, text: str, tmp_path: Path) -> None:
    example = tmp_path / "example.yaml"
    example.write_text(text)
    # The secrets an example names come from the environment, as in a real deployment.
    env = {name: f"example-{name.lower()}" for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)}
    checked = invoke("config", "check", str(example), env=env)
    assert checked.exit_code == 0, f"{where}:\n{checked.stderr}"
    assert f"{example}: OK" in checked.stdout


#: Commands that read or write the store (the others only read files).
STORE_COMMANDS = {
    "sync", "refresh", "values", "explain", "scores", "status", "doctor", "serve", "api", "worker",
    "migrate", "apikey", "alerts", "webhooks", "measures", "incentives",
}  # fmt: skip


def store_uses(text: str) -> list[tuple[str, str]]:
    """(database URL, configuration) of every store command in the shell examples of ``text``,
    following ``export``s and ``VAR=value`` prefixes as a shell would."""
    exported: dict[str, str] = {}
    uses = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            for word in words[1:]:
                name, equals, value = word.partition("=")
                if equals:
                    exported[name] = value
            continue
        env = dict(exported)
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        if not words or Path(words[0]).name != "crm-perf-sync" or words[1:2] == []:
            continue
        if words[1] not in STORE_COMMANDS:
            continue
        config = env.get("CRM_PERF_SYNC_CONFIG", "config/crm-perf-sync.yaml")
        if "--config" in words:
            config = words[words.index("--config") + 1]
        uses.append((env.get("CRM_PERF_SYNC_DATABASE_URL", "sqlite:///./crm-perf-sync.db"), config))
    return uses


def test_each_sample_dataset_goes_into_a_store_of_its_own() -> None:
    shell = "".join(text for _, text in blocks(REPO / "README.md", "sh"))
    stores: dict[str, set[str]] = {}
    for database, config in store_uses(shell):
        stores.setdefault(database, set()).add(config)
    datasets = {config for configs in stores.values() for config in configs if "examples/" in config}
    assert datasets == {f"config/examples/{name}.yaml" for name in ("maven", "zoho", "x_education")}
    for database, configs in stores.items():
        assert len(configs) == 1, f"{database} would hold {sorted(configs)}"


def test_the_shell_reading_follows_exports_and_prefixes() -> None:
    uses = store_uses(
        "export CRM_PERF_SYNC_DATABASE_URL=sqlite:///./a.db\n"
        "crm-perf-sync sync --config one.yaml   # a comment\n"
        "CRM_PERF_SYNC_DATABASE_URL=sqlite:///./b.db .venv/bin/crm-perf-sync refresh \\\n"
        "  --config two.yaml\n"
        "crm-perf-sync config check three.yaml\n"
    )
    assert uses == [("sqlite:///./a.db", "one.yaml"), ("sqlite:///./b.db", "two.yaml")]


@pytest.mark.parametrize("path", ["crm-perf-sync.db.worker-lock", "maven.db.worker-lock", ".env"])
def test_local_state_is_not_committed(path: str) -> None:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run([git, "check-ignore", "--no-index", "-q", path], cwd=REPO)
    assert ignored.returncode == 0, f"{path} is not in .gitignore"

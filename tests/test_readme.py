"""README.md starts with the two commands, CI runs exactly the second, and its tables are the committed results."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return block.strip().splitlines()


def test_readme_starts_with_setup_and_test_commands():
    assert (ROOT / "README.md").read_text().startswith("# oscar-gguf\n\n```sh\n")
    setup, test = readme_commands()
    assert "oscar-gguf chat" in setup and "--kv oscar2" in setup
    assert test.splitlines()[-1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_tables_are_the_committed_results():
    spec = importlib.util.spec_from_file_location("sync_readme", ROOT / "scripts" / "sync_readme.py")
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    text = (ROOT / "README.md").read_text()
    assert sync.synced(text) == text, "run scripts/sync_readme.py"

"""The README's offline example must keep working: run it against the emulator."""

from __future__ import annotations

import re
from pathlib import Path

import trio

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_the_two_fresh_machine_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "trioalpaca demo" in text
    assert "nox -s tests" in text


async def test_offline_example_runs_against_the_emulator() -> None:
    (block,) = [b for b in _python_blocks() if "open_emulator" in b]
    # Run the example's main() in this test's trio run instead of starting a second one.
    namespace: dict[str, object] = {}
    exec(compile(block.replace("trio.run(main)", ""), "README.md", "exec"), namespace)
    main = namespace["main"]
    with trio.fail_after(20):
        await main()  # type: ignore[operator]


def test_quick_start_compiles() -> None:
    (block,) = [b for b in _python_blocks() if 'feed="iex"' in b and "open_emulator" not in b]
    compile(block, "README.md", "exec")

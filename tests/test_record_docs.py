"""The recording guide's example (docs/examples/recording.py, included in the guide) runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "recording.py"


async def test_recording_guide_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("recording_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    await module.main()  # asserts replay == live inside
    out = capsys.readouterr()
    assert "'trades':" in out.out and "'quotes':" in out.out
    assert "'dropped': 0" in out.err

"""The codec's fast constructors build ordinary, frozen model instances (trioalpaca._codec)."""

from __future__ import annotations

import pickle
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca import _codec
from trioalpaca._codec import Decoder, Encoder
from trioalpaca.testing import strategies as tst

KINDS = ["stocks", "crypto", "options", "news"]


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_decoded_models_are_plain_frozen_instances(
    kind: str, encoding: Any, data: st.DataObject
) -> None:
    messages = data.draw(st.lists(tst.data_messages(kind), min_size=1, max_size=6))
    frame = Encoder(kind, encoding).encode(messages)
    decoded = Decoder(kind, encoding).decode(frame)
    assert decoded == messages
    for got, want in zip(decoded, messages, strict=True):
        # exactly the model class (never the filler subclass the constructor fills)
        assert type(got) is type(want)
        assert pickle.loads(pickle.dumps(got)) == want
        fields = attrs.fields(type(got))
        if not fields:
            continue
        first = fields[0].name
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(got, first, None)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            delattr(got, first)


def test_every_data_class_has_a_filler_with_the_same_layout() -> None:
    for types in _codec._DATA_TYPES.values():
        for cls in types.values():
            filler = _codec._FILLERS[cls]
            assert filler is not None, cls
            assert filler.__bases__ == (cls,)
            assert filler.__basicsize__ == cls.__basicsize__
            assert "__dict__" not in dir(filler.__new__(filler))

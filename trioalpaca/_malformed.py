"""Counting and rate-limited logging of :class:`~trioalpaca.models.MalformedMessage` events.

Private helper shared by the clients: every malformed element or undecodable frame is counted;
a warning is logged at most once per ``T`` type per :data:`LOG_INTERVAL` seconds, saying how many
more of that type were suppressed since the previous warning.
"""

from __future__ import annotations

import logging

from trioalpaca.models import MalformedMessage

__all__ = ["LOG_INTERVAL", "MalformedTally"]

#: Seconds between two warnings about malformed messages of the same ``T`` type.
LOG_INTERVAL = 60.0


class MalformedTally:
    """Counts malformed messages and logs them, rate-limited per ``T`` type.

    Args:
        logger: where the warnings go.
        label: names the stream in the warnings.
    """

    __slots__ = ("_last", "_logger", "frames", "label", "messages")

    def __init__(self, logger: logging.Logger, label: str) -> None:
        self._logger = logger
        self.label = label
        self.messages = 0
        """Every MalformedMessage seen (elements and whole frames)."""
        self.frames = 0
        """Whole frames that did not decode."""
        # key -> (time of the last warning, messages suppressed since); one key per T type,
        # so it stays small (known types, plus "frame" and "element without a T").
        self._last: dict[str, tuple[float, int]] = {}

    def note(self, msg: MalformedMessage, now: float) -> bool:
        """Count ``msg``; log it unless its type was logged less than a minute ago.

        Returns whether a warning was logged.
        """
        self.messages += 1
        if msg.frame:
            self.frames += 1
            key = "frame"
        else:
            t = msg.element_type
            key = f"{t!r}" if isinstance(t, str) else "element without a T"
            if len(key) > 24:  # an unknown T is never malformed; keep the table bounded anyway
                key = "other"
        last = self._last.get(key)
        if last is not None and now - last[0] < LOG_INTERVAL:
            self._last[key] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        self._last[key] = (now, 0)
        what = "undecodable frame" if msg.frame else f"malformed {key} message"
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        self._logger.warning("stream %s: %s skipped%s: %s", self.label, what, more, msg.error[:200])
        return True

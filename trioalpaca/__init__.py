"""trioalpaca: a trio client, connection pool and emulator for Alpaca's real-time streams."""

from __future__ import annotations

__version__ = "0.1.0"

# Each layer adds its public names in its own block below (keep blocks separate to avoid clashes).

# --- models ---
# --- end models ---

# --- errors ---
# --- end errors ---

# --- backoff / endpoints ---
# --- end backoff / endpoints ---

# --- client ---
# --- end client ---

# --- metrics ---
# isort: split
from trioalpaca.metrics import Counter as Counter
from trioalpaca.metrics import LatencyHistogram as LatencyHistogram
from trioalpaca.metrics import LatencySnapshot as LatencySnapshot
from trioalpaca.metrics import RateMeter as RateMeter
from trioalpaca.metrics import RateSnapshot as RateSnapshot

# --- end metrics ---

# --- pipeline / manager ---
# --- end pipeline / manager ---

# --- pool ---
# --- end pool ---

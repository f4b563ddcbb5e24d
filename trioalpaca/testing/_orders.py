"""Order flow of the emulated trading stream (``trade_updates``).

Pure code: :class:`OrderFlow` keeps orders and positions and turns order life-cycle steps into
``trade_updates`` payloads (the ``data`` object of ``{"stream": "trade_updates", "data": ...}``) in
the shape the REST API and the official SDKs use: an ``order`` object with every field alpaca-py
validates, ``timestamp`` on every event, ``price``/``qty``/``position_qty`` as decimal strings on
fills, ``execution_id`` on fills, plus ``at`` and ``event_id``.

A *plan* says how an order lives: ``"fill"`` (new, fill), ``"partial"`` (new, partial fills, fill),
``"cancel"`` (new, one partial fill, canceled), ``"expire"`` (new, expired), ``"reject"`` (rejected)
and ``"hold"`` (new; then waits for :meth:`OrderFlow.cancel` or :meth:`OrderFlow.expire`). The
emulator plays the steps returned by :meth:`OrderFlow.submit` with the given delays.
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal
from typing import Any, Literal

import attrs

from .._time import format_rfc3339_ns as format_ts

__all__ = ["PLANS", "Order", "OrderFlow", "OrderPlan", "Step"]

OrderPlan = Literal["fill", "partial", "cancel", "expire", "reject", "hold"]
#: Every order plan name.
PLANS: tuple[str, ...] = ("fill", "partial", "cancel", "expire", "reject", "hold")
_TERMINAL = {"filled", "canceled", "expired", "rejected"}


@attrs.frozen
class Step:
    """One scheduled life-cycle step: after ``delay`` seconds, ``event`` for ``fill_qty`` shares."""

    delay: float
    event: str
    fill_qty: Decimal = Decimal(0)


@attrs.define
class Order:
    """Mutable state of one emulated order."""

    id: str
    client_order_id: str
    symbol: str
    qty: Decimal
    side: str
    type: str
    time_in_force: str
    limit_price: Decimal | None
    price: Decimal
    created_at_ns: int
    status: str = "new"
    filled_qty: Decimal = Decimal(0)
    notional_filled: Decimal = Decimal(0)
    updated_at_ns: int = 0
    filled_at_ns: int | None = None
    canceled_at_ns: int | None = None
    expired_at_ns: int | None = None
    failed_at_ns: int | None = None

    @property
    def terminal(self) -> bool:
        """True once the order is filled, canceled, expired or rejected."""
        return self.status in _TERMINAL

    @property
    def filled_avg_price(self) -> Decimal | None:
        """Volume-weighted average fill price, None before the first fill."""
        if not self.filled_qty:
            return None
        return (self.notional_filled / self.filled_qty).quantize(Decimal("0.0001"))

    def to_wire(self) -> dict[str, Any]:
        """The REST order object as embedded in ``trade_updates``."""

        def ts(ns: int | None) -> str | None:
            return None if ns is None else format_ts(ns)

        avg = self.filled_avg_price
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": format_ts(self.created_at_ns),
            "updated_at": format_ts(self.updated_at_ns or self.created_at_ns),
            "submitted_at": format_ts(self.created_at_ns),
            "filled_at": ts(self.filled_at_ns),
            "expired_at": ts(self.expired_at_ns),
            "canceled_at": ts(self.canceled_at_ns),
            "failed_at": ts(self.failed_at_ns),
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "asset:" + self.symbol)),
            "symbol": self.symbol,
            "asset_class": "crypto" if "/" in self.symbol else "us_equity",
            "notional": None,
            "qty": str(self.qty),
            "filled_qty": str(self.filled_qty),
            "filled_avg_price": None if avg is None else str(avg),
            "order_class": "",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "time_in_force": self.time_in_force,
            "limit_price": None if self.limit_price is None else str(self.limit_price),
            "stop_price": None,
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }


class OrderFlow:
    """Orders and positions of one emulated account; deterministic for a seed."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(f"{seed}:orders")
        self.orders: dict[str, Order] = {}
        #: Signed position quantity per symbol.
        self.positions: dict[str, Decimal] = {}

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def submit(
        self,
        symbol: str,
        qty: float | int | str | Decimal,
        side: str = "buy",
        *,
        now_ns: int,
        plan: OrderPlan = "fill",
        type: str = "market",
        limit_price: float | str | Decimal | None = None,
        time_in_force: str = "day",
        price: float | str | Decimal | None = None,
        step_delay: float = 0.05,
        client_order_id: str | None = None,
    ) -> tuple[Order, list[Step]]:
        """Create an order and return it with the steps the emulator should play.

        ``price`` is the execution price (defaults to the limit price, else a deterministic price).
        """
        if plan not in PLANS:
            raise ValueError(f"unknown order plan {plan!r}; valid: {', '.join(PLANS)}")
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        q = Decimal(str(qty))
        if q <= 0:
            raise ValueError("qty must be positive")
        lp = None if limit_price is None else Decimal(str(limit_price))
        if price is not None:
            px = Decimal(str(price))
        elif lp is not None:
            px = lp
        else:
            px = Decimal(str(round(self._rng.uniform(20, 500), 2)))
        order = Order(
            id=self._uuid(),
            client_order_id=client_order_id or self._uuid(),
            symbol=symbol,
            qty=q,
            side=side,
            type="limit" if lp is not None and type == "market" else type,
            time_in_force=time_in_force,
            limit_price=lp,
            price=px,
            created_at_ns=now_ns,
        )
        self.orders[order.id] = order
        steps: list[Step]
        if plan == "reject":
            steps = [Step(step_delay, "rejected")]
        elif plan == "fill":
            steps = [Step(0.0, "new"), Step(step_delay, "fill", q)]
        elif plan == "partial":
            parts = self._split(q, 3)
            steps = [Step(0.0, "new")]
            steps += [Step(step_delay, "partial_fill", p) for p in parts[:-1]]
            steps.append(Step(step_delay, "fill", parts[-1]))
        elif plan == "cancel":
            parts = self._split(q, 2)
            steps = [Step(0.0, "new"), Step(step_delay, "partial_fill", parts[0])]
            steps.append(Step(step_delay, "canceled"))
        elif plan == "expire":
            steps = [Step(0.0, "new"), Step(step_delay, "expired")]
        else:
            steps = [Step(0.0, "new")]
        return order, steps

    def _split(self, qty: Decimal, n: int) -> list[Decimal]:
        """Split ``qty`` into ``n`` positive parts (fewer if it is too small)."""
        whole = qty == qty.to_integral_value()
        unit = Decimal(1) if whole else Decimal("0.0001")
        n = max(1, min(n, int(qty / unit)))
        parts: list[Decimal] = []
        left = qty
        for i in range(n - 1):
            share = (left / (n - i)).quantize(unit)
            share = max(unit, share)
            parts.append(share)
            left -= share
        parts.append(left)
        return parts

    def apply(self, order_id: str, step: Step, now_ns: int) -> dict[str, Any] | None:
        """Apply ``step`` to an order and return the ``trade_updates`` payload, or None when the
        order is already terminal (a cancel raced a fill, for instance)."""
        order = self.orders[order_id]
        if order.terminal:
            return None
        order.updated_at_ns = now_ns
        ev = step.event
        data: dict[str, Any] = {"event": ev}
        if ev in ("fill", "partial_fill"):
            qty = min(step.fill_qty, order.qty - order.filled_qty)
            jitter = Decimal(self._rng.choice((-2, -1, 0, 0, 1, 2))) * Decimal("0.01")
            price = order.price + jitter
            if order.limit_price is not None:
                price = (
                    min(price, order.limit_price)
                    if order.side == "buy"
                    else max(price, order.limit_price)
                )
            order.filled_qty += qty
            order.notional_filled += qty * price
            signed = qty if order.side == "buy" else -qty
            pos = self.positions.get(order.symbol, Decimal(0)) + signed
            self.positions[order.symbol] = pos
            if ev == "fill":
                order.status = "filled"
                order.filled_at_ns = now_ns
            else:
                order.status = "partially_filled"
            data.update(
                {
                    "execution_id": self._uuid(),
                    "price": str(price),
                    "qty": str(qty),
                    "position_qty": str(pos),
                }
            )
        elif ev == "canceled":
            order.status = "canceled"
            order.canceled_at_ns = now_ns
        elif ev == "expired":
            order.status = "expired"
            order.expired_at_ns = now_ns
        elif ev == "rejected":
            order.status = "rejected"
            order.failed_at_ns = now_ns
        elif ev == "new":
            order.status = "new"
        else:
            order.status = ev
        data["order"] = order.to_wire()
        data["timestamp"] = format_ts(now_ns)
        data["at"] = format_ts(now_ns)
        data["event_id"] = self._uuid()
        return data

    def cancel(self, order_id: str, now_ns: int) -> dict[str, Any] | None:
        """Cancel an open order; None if it is unknown or already terminal."""
        if order_id not in self.orders:
            return None
        return self.apply(order_id, Step(0.0, "canceled"), now_ns)

    def expire(self, order_id: str, now_ns: int) -> dict[str, Any] | None:
        """Expire an open order; None if it is unknown or already terminal."""
        if order_id not in self.orders:
            return None
        return self.apply(order_id, Step(0.0, "expired"), now_ns)

    def scripted(self, n: int) -> tuple[str, Decimal, str, OrderPlan]:
        """The ``n``-th order of the CLI's scripted flow: (symbol, qty, side, plan)."""
        symbols = ("AAPL", "MSFT", "TSLA", "SPY")
        plans: tuple[OrderPlan, ...] = ("fill", "partial", "cancel", "fill", "expire", "partial")
        side = "buy" if n % 3 != 2 else "sell"
        return symbols[n % len(symbols)], Decimal(10 * (1 + n % 5)), side, plans[n % len(plans)]

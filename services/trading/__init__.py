"""The platform's trading venue: matching engine, journal and market simulation."""

from services.trading.engine import (
    BUY,
    FOK,
    GTC,
    IOC,
    SELL,
    MatchingEngine,
    Order,
    OrderStatus,
    RejectedOrder,
)

__all__ = [
    "BUY",
    "SELL",
    "GTC",
    "IOC",
    "FOK",
    "MatchingEngine",
    "Order",
    "OrderStatus",
    "RejectedOrder",
]

"""Helpers shared by the Python DB-API clients (pytds_client.py,
pyodbc_client.py): timing and JSON-safe values of result cells."""

import datetime
import decimal
import time
import uuid


def now_ms():
    return time.monotonic() * 1000.0


def rnd(x):
    return round(x, 2)


def jvalue(v):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "0x" + bytes(v).hex().upper()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v).upper()
    return str(v)

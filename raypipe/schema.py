"""Canonical column names and types shared by every stage."""
import pyarrow as pa

EVENT_TYPES = ("view", "click", "cart", "purchase")
DEFAULT_EVENT_TYPE = "purchase"

# Columns every event source must provide (after column mapping); the rest are optional.
REQUIRED_EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
# Provenance added by the readers so every row can be traced back to its file and row.
FILE, ROW, REASON = "_file", "_row", "_reason"

QUARANTINE = pa.schema([
    ("table", pa.string()),         # events | items
    ("reason", pa.string()),
    (FILE, pa.string()),
    (ROW, pa.int64()),
    ("record", pa.string()),        # the offending row as JSON, as read
])

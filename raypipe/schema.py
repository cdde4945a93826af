"""Canonical column names and types shared by every stage."""
import pyarrow as pa

EVENT_TYPES = ("view", "click", "cart", "purchase")
DEFAULT_EVENT_TYPE = "purchase"

# Columns every event source must provide (after column mapping); the rest are optional.
REQUIRED_EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
# Provenance added by the readers so every row can be traced back to its file and row.
FILE, ROW, REASON = "_file", "_row", "_reason"
# Set by the readers on a record they could not parse or convert: why, and the raw record.
READ_ERROR, RECORD = "_read_error", "_record"
# Longest id, timestamp or event type kept; longer values are quarantined (value_too_long).
MAX_VALUE_CHARS = 1024

QUARANTINE = pa.schema([
    ("table", pa.string()),         # events | items
    ("reason", pa.string()),
    (FILE, pa.string()),
    (ROW, pa.int64()),
    ("user_id", pa.string()),       # whose row it was, where that could be read
    ("record", pa.string()),        # the offending row as JSON, or the raw record, as read
])

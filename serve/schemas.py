"""The service's request and response bodies (pydantic): what the OpenAPI spec documents."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from raypipe.config import STRATEGIES
from raypipe.schema import EVENT_TYPES

Strategy = Literal[STRATEGIES]
EventType = Literal[EVENT_TYPES]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ItemText = Annotated[str, StringConstraints(min_length=1, max_length=2000)]

MAX_EVENTS = 1000          # hard ceiling of the schema; ServeArgs.max_events may set less
MAX_K = 100


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: ItemId
    event_type: EventType = "purchase"
    timestamp: Annotated[int, Field(ge=0, le=2**53)] | datetime = Field(
        description="epoch seconds, or ISO 8601; only the order matters")


class SequenceRequest(BaseModel):
    """Recent events of an anonymous or changed user; items the catalogue does not know may
    bring their text in `item_texts` (item_id -> text), else they are left out and listed."""
    model_config = ConfigDict(extra="forbid")
    user_id: Annotated[str, StringConstraints(max_length=256)] | None = None
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)
    item_texts: dict[ItemId, ItemText] = Field(default_factory=dict, max_length=MAX_EVENTS)
    k: int = Field(10, ge=1, le=MAX_K)
    strategy: Strategy = "blend"


class Segment(BaseModel):
    id: int
    name: str = Field(description="the segment's top distinctive terms, joined")
    terms: list[str]


class LevelSegment(Segment):
    level: int = Field(description="the number of segments at this level of the hierarchy")


class Interest(Segment):
    weight: float = Field(description="share of the user's recency-weighted history")
    items: list[str] = Field(default_factory=list, description="the user's items that make "
                             "up this interest, heaviest first (at most 3)")
    item_weights: list[float] = Field(default_factory=list, description="each item's share "
                                      "of the interest's weight")


class Profile(BaseModel):
    user_id: str
    segment: Segment
    segment_items: list[str] = Field(default_factory=list, description="the user's own items "
                                     "that pull it most towards its segment's centre (history "
                                     "weight times closeness), at most 3")
    confidence: float = Field(description="1 - d1/d2 over the two nearest segment centres")
    distance: float
    interests: list[Interest]
    levels: list[LevelSegment] = Field(description="the user's segment at each level of the "
                                       "hierarchy, coarse to fine (one level when flat); each "
                                       "is the parent of the next")
    history_length: int
    counts: dict[str, int] = Field(description="n_events and n_<event type>")
    version: str = Field(description="the artifacts version that answered")


class Item(BaseModel):
    item_id: str
    score: float
    text: str
    reason: Optional[Literal["recent_item", "bought_together", "segment", "interest"]] = Field(
        None, description="why the item is recommended: close to the user's recent items "
        "(`recent_item`), often chosen after them (`bought_together`), popular in the "
        "user's segment (`segment`), or one of the user's interests (`interest`); for "
        "`blend`, the component that adds most to the item's score. Absent with "
        "recommend.explain off")
    because: list[str] = Field(default_factory=list, description="the history items that "
                               "most support it, best first (at most 3)")
    because_weights: list[float] = Field(default_factory=list, description="each cited "
                                         "item's share of the reason's score")
    explanation: Optional[str] = Field(None, description="a short sentence from the cited "
                                       "items' texts")


class Recommendations(BaseModel):
    user_id: str
    strategy: Strategy
    items: list[Item]
    segment: Segment
    version: str


class SequenceAnswer(BaseModel):
    profile: Profile
    recommendations: Recommendations
    new_items: list[str] = Field(description="items outside the catalogue, used by their text")
    unknown_items: list[str] = Field(description="items without catalogue entry or text: "
                                                 "left out")
    version: str


class SwapError(BaseModel):
    artifacts: str              # what the service was asked to load
    error: str                  # why it could not: the old version goes on answering
    at: str


class Version(BaseModel):
    version: str
    created_at: str | None
    artifacts: str
    run: str | None = None      # the version folder answering (LATEST's, when it was read)
    swap_error: SwapError | None = None   # the last failed swap, until a swap succeeds
    raypipe_version: str | None
    user_repr: str
    users: int
    items: int
    segments: int
    levels: list[int] = Field(default_factory=list,
                              description="segments per level of the hierarchy")
    strategies: list[str]
    k: int


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Problem(BaseModel):
    detail: str

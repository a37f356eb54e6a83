"""What the service accepts and answers: typed pydantic models, shared by the service, the MLflow wrapper and clients.

Types are checked here (a wrong type is a 400 naming the field); limits that come from params
(k, history length, text length) are checked in `limits.py`, so they can change without code.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.errors import RecloopError

FEEDBACK_EVENTS = ("impression", "click", "like", "dislike", "rating", "purchase", "add_to_cart", "skip")
Strategy = Literal["history", "text", "popularity"]
# How the answering model was made: trained on its catalog, or brought to it from a foundation (docs/transfer.md).
Mode = Literal["trained", "zero-shot", "adapter", "full"]


class RequestError(RecloopError):
    """A request the service refuses, with the HTTP status to answer and a message saying what to fix."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Schema(BaseModel):
    # Unknown fields are typos that would silently change the answer; ids may come as numbers.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class HistoryEvent(Schema):
    item_id: str
    timestamp: int | None = Field(None, description="seconds since the epoch; missing: spaced a minute apart up to now")
    event: str | None = Field(None, description="rate, view, click...; missing: the catalog's most common event")
    value: float | None = Field(None, allow_inf_nan=False, description="rating or 1.0")
    domain: str | None = None


class Context(Schema):
    timestamp: int | None = Field(None, description="the request's time (seconds); missing: now")
    domain: str | None = Field(None, description="the scenario the request comes from; a promoted domain's name "
                                                 "selects that domain's model (others: the default model)")


class Filters(Schema):
    exclude_items: list[str] = []
    categories: list[str] | None = Field(None, description="keep only items in at least one of these")
    domain: str | None = Field(None, description="keep only items of this domain")


class RecommendRequest(Schema):
    """A known `user_id` (their stored history), an ad-hoc `history`, both, or neither (cold start)."""

    user_id: str | None = None
    history: list[str | HistoryEvent] | None = Field(None, description="item ids, oldest first, or events")
    text: str | None = Field(None, description="what the user is after, for cold-start answers")
    # Factories, not instances: pydantic deep-copies a model default at every validation (6.7 vs 2.7 us a request).
    context: Context = Field(default_factory=Context)
    k: int = 10
    filters: Filters = Field(default_factory=Filters)
    exclude_seen: bool = True
    explain: bool = False
    request_id: str | None = Field(None, min_length=1, max_length=128,
                                   description="seeds serve.exploration: the same id gets the same list; "
                                               "missing: a new random id (answered, so it can be replayed)")


class Because(Schema):
    item_id: str
    title: str
    similarity: float


class NamedFact(Schema):
    text: str = Field(description='e.g. "shares a director with Alien (1979)"')
    kind: str = Field(description="kg (a knowledge-graph relation) or attribute")
    relation: str
    item_id: str = Field(description="the history item the fact connects to")
    title: str
    contribution: float = Field(description="the fact's share of the item's similarity to that history item")


class Explanation(Schema):
    reason: str
    because_of: list[Because] = []
    attributes: list[str] = Field([], description="the item's categories shared with the history, most frequent first")
    facts: list[NamedFact] = Field([], description="knowledge-graph relations and attribute values shared with "
                                                   "history items, by contribution")


class RecommendedItem(Schema):
    item_id: str
    title: str
    rank: int
    score: float
    like_prob: float | None = Field(None, description="the like head's probability; null for cold-start answers")
    categories: list[str] = []
    explanation: Explanation | None = None
    propensity: float | None = Field(None, description="probability that the serving policy shows this item at "
                                                       "this rank (1.0 without exploration)")


class RecommendResponse(Schema):
    request_id: str
    user_id: str | None
    strategy: Strategy = Field(description="history: the sequence model; text or popularity: cold start")
    known_user: bool
    history_used: int
    unknown_items: list[str] = Field(description="history item ids not in the catalog, ignored")
    model_version: str
    domain: str | None = Field(None, description="the promoted domain whose model answered (context.domain); "
                                                 "null: the default model")
    mode: Mode = Field("trained", description="how that model was made: trained, or a transfer mode")
    scoring: str = Field("dot", description="how a history is scored: dot or cosine (the model's), "
                                            "+content when blended with the model's content prior")
    policy: str = Field("none", description="the serving policy and its parameters (serve.exploration)")
    items: list[RecommendedItem]


class SimilarRequest(Schema):
    item_id: str | None = None
    text: str | None = None
    k: int = 10
    filters: Filters = Field(default_factory=Filters)


class SimilarItem(Schema):
    item_id: str
    title: str
    rank: int
    score: float
    categories: list[str] = []


class SimilarResponse(Schema):
    request_id: str
    by: Literal["item", "text"]
    model_version: str
    items: list[SimilarItem]


class FeedbackEvent(Schema):
    item_id: str
    event: Literal[FEEDBACK_EVENTS]  # type: ignore[valid-type]
    user_id: str | None = None
    value: float | None = Field(None, allow_inf_nan=False, description="the rating for event=rating; otherwise 1.0")
    timestamp: int | None = Field(None, description="seconds since the epoch; missing: when received")
    request_id: str | None = Field(None, description="the recommend answer this event reacts to")
    rank: int | None = Field(None, ge=1)
    domain: str | None = None

    @model_validator(mode="after")
    def _rating_has_value(self) -> FeedbackEvent:
        if self.event == "rating" and self.value is None:
            raise ValueError("an event of type rating needs its value (e.g. 4.5)")
        return self


class FeedbackRequest(Schema):
    events: list[FeedbackEvent]


class FeedbackResponse(Schema):
    accepted: int
    durable: bool = Field(description="true: every event was committed to the log before this answer")
    unknown_items: list[str]


class ReloadResponse(Schema):
    previous_version: str
    version: str
    changed: bool = Field(description="the default model or any domain's model changed")
    seconds: float
    domains: dict[str, str] = Field({}, description="each promoted domain served now -> its version")
    failed: dict[str, str] = Field({}, description="domains whose new champion could not be loaded -> why "
                                                   "(their previous model, if any, keeps serving)")


class ContentPriorInfo(Schema):
    weight: float = Field(description="the content prior's share of the blend")
    history_items: int = Field(description="the user's last items the prior reads")
    normalisation: str = Field(description="how the item text vectors it reads were normalised")


class DomainInfo(Schema):
    model_version: str
    mode: Mode
    scoring: str = "dot"
    content_prior: ContentPriorInfo | None = Field(None, description="null: scored by the model alone")
    items: int
    users: int


class InfoResponse(Schema):
    model_version: str
    mode: Mode = Field(description="how the default model was made")
    scoring: str = Field("dot", description="how the default model scores a history (RecommendResponse.scoring)")
    content_prior: ContentPriorInfo | None = Field(None, description="the default model's content prior, if applied")
    domains: dict[str, DomainInfo] = Field(description="the promoted domains this worker serves, by name")
    worker: int = Field(description="the process id of the worker that answered")
    timeout_patch: bool = Field(description="the request-timeout middleware in the app is recloop's (timeout.py)")
    watch_seconds: float = Field(description="how often this worker checks the registry's champion (0: never)")
    items: int
    users: int
    encoder: str
    bundle_created_at: int
    loaded_at: float
    limits: dict[str, int]

"""The request log, feedback and intent-discovery tables (SQLAlchemy Core: the writer inserts rows in bulk).

Alembic migrations in `migrations/versions/` create these; a test checks that the newest
migration and these definitions agree, so the two cannot drift apart.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

# Stable constraint names on every backend, so later migrations can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID_LENGTH = 36  # canonical UUID text
NAME_LENGTH = 200  # intents, routes, model versions

requests = Table(
    "requests",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("text", Text, nullable=True),  # NULL when the router runs with store_text off
    Column("intent", String(NAME_LENGTH), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("route", String(NAME_LENGTH), nullable=False),
    Column("fallback", Boolean, nullable=False),
    Column("fallback_reason", String(32), nullable=True),
    Column("model_version", String(NAME_LENGTH), nullable=False, index=True),
    Column("latency_ms", Float, nullable=False),
    Column("meta", JSON, nullable=True),  # the request's `metadata` object
    # cascade mode: agreed | overruled | invalid | failed, and the LLM asked; NULL: not escalated
    Column("escalation", String(16), nullable=True),
    Column("escalation_model", String(NAME_LENGTH), nullable=True),
    # what the review queue ranks by: the second-highest probability (NULL for rows logged before
    # revision 0003 and for a one-label model) and the top-k [{"intent", "probability"}]
    Column("top2_confidence", Float, nullable=True),
    Column("alternatives", JSON, nullable=True),
    # a random share of requests marked when answered (`audit_rate`): the unbiased sample that
    # live accuracy is estimated from (NULL for rows logged before revision 0004)
    Column("audit", Boolean, nullable=True, index=True),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),  # derived from idempotency_key
    Column("idempotency_key", String(300), nullable=False, unique=True),
    Column("payload_hash", String(64), nullable=False),  # detects a key reused for other data
    Column(
        "request_id",
        String(ID_LENGTH),
        ForeignKey("requests.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("correct_intent", String(NAME_LENGTH), nullable=False),
    Column("predicted_intent", String(NAME_LENGTH), nullable=False),
    Column("agree", Boolean, nullable=False),
    Column("source", String(100), nullable=True),
    Column("comment", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)

# what the second model answered for a request, off the request path: the challenger in shadow,
# or the champion beside a canary (serving.rollout); the request row keeps the served answer
shadow_answers = Table(
    "shadow_answers",
    metadata,
    Column(
        "request_id",
        String(ID_LENGTH),
        ForeignKey("requests.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("model_version", String(NAME_LENGTH), nullable=False),
    Column("intent", String(NAME_LENGTH), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("fallback", Boolean, nullable=False),
    Column("latency_ms", Float, nullable=False),
)

# intent discovery (`switchboard intents discover`, router.discovery): one row per run, the
# proposals it keeps (an id that lives across runs while the cluster grows) and their members
discovery_runs = Table(
    "discovery_runs",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False, index=True),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),  # the window of requests read
    Column("until", DateTime(timezone=True), nullable=False),
    Column("model_version", String(NAME_LENGTH), nullable=False),  # the encoder that embedded them
    Column("requests", Integer, nullable=False),  # requests with a text in the window
    Column("unrouted", Integer, nullable=False),  # of those: fell back, out of scope or unsure
    Column("candidates", Integer, nullable=False),  # unrouted texts, duplicates collapsed
    Column("clustered", Integer, nullable=False),  # candidates in some proposal (not noise)
    Column("proposals_open", Integer, nullable=False),  # open proposals after the run
)

proposals = Table(
    "proposals",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # open | named (became a pending intent) | merged (into an existing intent) | dismissed
    Column("status", String(16), nullable=False, index=True),
    Column("intent", String(NAME_LENGTH), nullable=True),  # named / merged: that intent
    Column("size", Integer, nullable=False),  # members found by the latest run that found it
    Column("previous_size", Integer, nullable=True),  # by the run before: the trend
    Column("dismissed_size", Integer, nullable=True),  # its size when dismissed
    Column("keywords", JSON, nullable=False),  # class-based TF-IDF, most distinctive first
    Column("examples", JSON, nullable=False),  # the most representative member texts
    Column("nearest_intent", String(NAME_LENGTH), nullable=True),
    Column("nearest_similarity", Float, nullable=True),  # cosine of the centroids
    Column("centroid", JSON, nullable=False),  # unit vector, in the encoder's space
    Column("model_version", String(NAME_LENGTH), nullable=False),
    Column("last_run_id", String(ID_LENGTH), nullable=False),
)

proposal_members = Table(
    "proposal_members",
    metadata,
    Column(
        "proposal_id",
        String(ID_LENGTH),
        ForeignKey("proposals.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "request_id",
        String(ID_LENGTH),
        ForeignKey("requests.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    Column("state", String(16), nullable=False),  # member | confirmed | removed
    Column("similarity", Float, nullable=False),  # cosine to the proposal's centroid
    Column("added_at", DateTime(timezone=True), nullable=False),
)

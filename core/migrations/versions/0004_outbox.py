"""The outbox of texts and emails (notify.outbox).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

One row per message decided, written with the decision; ``dedupe_key`` is
unique so a message is queued once; a sender takes rows with a lease
(``lease_until``), so a sender that dies mid-way gives its rows back.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("recipient_id", sa.String(64), nullable=False),
        sa.Column("about_id", sa.String(64), nullable=True),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("provider_id", sa.String(64), nullable=True),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("dedupe_key", name="uq_outbox_dedupe_key"),
    )
    op.create_index("ix_outbox_state_next_attempt_at", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_about_id", "outbox", ["about_id"])
    op.create_index("ix_outbox_provider_id", "outbox", ["provider_id"])
    op.create_index("ix_outbox_recipient_id_created_at", "outbox", ["recipient_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_recipient_id_created_at", table_name="outbox")
    op.drop_index("ix_outbox_provider_id", table_name="outbox")
    op.drop_index("ix_outbox_about_id", table_name="outbox")
    op.drop_index("ix_outbox_state_next_attempt_at", table_name="outbox")
    op.drop_table("outbox")

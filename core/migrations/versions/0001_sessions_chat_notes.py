"""Sessions, chat messages and notes.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Chat and note bodies are Fernet tokens (``signaling.crypto``), never text.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("therapist_id", sa.String(64), nullable=False),
        sa.Column("client_name", sa.Text(), nullable=True),
        sa.Column("therapist_name", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("terms_version", sa.Text(), nullable=False),
        _ts("requested_at", nullable=False),
        _ts("claimed_at", nullable=False),
        _ts("matched_at", nullable=False),
        _ts("started_at", nullable=True),
        _ts("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("request_id", name="uq_sessions_request_id"),
    )
    op.create_index("ix_sessions_client_id_matched_at", "sessions", ["client_id", "matched_at"])
    op.create_index(
        "ix_sessions_therapist_id_matched_at", "sessions", ["therapist_id", "matched_at"]
    )

    op.create_table(
        "chat_messages",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("sender_id", sa.String(64), nullable=False),
        sa.Column("client_msg_id", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        _ts("sent_at", nullable=False),
        # PostgreSQL numbers the rows itself; SQLite gets the number from the
        # insert (dispatch.tables explains why).
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="fk_chat_messages_session_id_sessions",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "session_id",
            "sender_id",
            "client_msg_id",
            name="uq_chat_messages_session_id_sender_id_client_msg_id",
        ),
        sa.UniqueConstraint("seq", name="uq_chat_messages_seq"),
    )
    op.create_index("ix_chat_messages_session_id_seq", "chat_messages", ["session_id", "seq"])

    op.create_table(
        "notes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("therapist_id", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        _ts("saved_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notes"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="fk_notes_session_id_sessions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_notes_session_id_saved_at", "notes", ["session_id", "saved_at"])


def downgrade() -> None:
    op.drop_table("notes")
    op.drop_table("chat_messages")
    op.drop_table("sessions")

"""Care records (care.tables, PROTOCOL.md §10): per-client data keys, form
answers, consents, the audit trail, erasures, referral codes and links.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _bigint() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("user_id", sa.String(64), nullable=False),
        # The client's own Fernet key, sealed by DISPATCH_DATA_KEY's cipher.
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("user_id", name="pk_data_keys"),
    )
    op.create_table(
        "form_answers",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("form", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        # A JSON object sealed by the client's data key: never in clear.
        sa.Column("answers", sa.LargeBinary(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("client_id", "form", name="pk_form_answers"),
    )
    op.create_table(
        "consents",
        sa.Column("id", _bigint(), sa.Identity(), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("about_id", sa.String(64), nullable=True),
        _ts("given_at"),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
    )
    op.create_index("ix_consents_client_id_given_at", "consents", ["client_id", "given_at"])
    op.create_index("ix_consents_about_id", "consents", ["about_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", _bigint(), sa.Identity(), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("actor_role", sa.String(16), nullable=False),
        sa.Column("record", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("about_id", sa.String(64), nullable=True),
        _ts("at"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_subject_id_id", "audit_log", ["subject_id", "id"])
    op.create_table(
        "erasures",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("erased_by", sa.String(64), nullable=False),
        _ts("erased_at"),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_erasures"),
    )
    op.create_table(
        "referral_codes",
        sa.Column("therapist_id", sa.String(64), nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("therapist_id", name="pk_referral_codes"),
        sa.UniqueConstraint("code", name="uq_referral_codes_code"),
    )
    op.create_table(
        "referrals",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("therapist_id", sa.String(64), nullable=False),
        _ts("linked_at"),
        sa.PrimaryKeyConstraint("client_id", name="pk_referrals"),
    )
    op.create_index("ix_referrals_therapist_id", "referrals", ["therapist_id"])


def downgrade() -> None:
    for table in (
        "referrals",
        "referral_codes",
        "erasures",
        "audit_log",
        "consents",
        "form_answers",
        "data_keys",
    ):
        op.drop_table(table)

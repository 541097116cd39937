"""The audit log against its own database role: no TRUNCATE (PostgreSQL), no INSERT OR REPLACE over
an existing row (SQLite), old refusals deletable by the retention command only; and the tallies
that aggregate repeated refusals (portal/core/audit.py).

Downgrade: back to the initial schema's triggers (no UPDATE, no DELETE at all); the tallies go.

Revision ID: 5e1f0c2a9b7d
Revises: ca9a4a8e42cf
Create Date: 2026-11-29 10:30:00

"""
from alembic import op
import sqlalchemy as sa

from portal.core.audit import APPEND_ONLY_DDL


# revision identifiers, used by Alembic.
revision = '5e1f0c2a9b7d'
down_revision = 'ca9a4a8e42cf'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('refusal_tallies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('who', sa.String(length=60), nullable=False),
    sa.Column('method', sa.String(length=10), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('last_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['audit_events.id'], name=op.f('fk_refusal_tallies_event_id_audit_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refusal_tallies')),
    sa.UniqueConstraint('who', 'method', 'path', 'window_start', name=op.f('uq_refusal_tallies_who_method_path_window_start'))
    )
    with op.batch_alter_table('refusal_tallies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refusal_tallies_event_id'), ['event_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_refusal_tallies_window_start'), ['window_start'], unique=False)

    # Replace the append-only triggers by the ones portal/core/audit.py declares today.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("update", "delete", "replace"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_events_no_{name}")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
    for statement in APPEND_ONLY_DDL.get(dialect, []):
        op.execute(statement)


def downgrade():
    # Back to the initial schema's guard, exactly: no TRUNCATE or REPLACE trigger, and no DELETE
    # at all (the retention command's exception for old refusals came with this revision). The
    # audit log stays append-only throughout.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_replace")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        op.execute(
            "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'the audit log is append-only'; END; $$ LANGUAGE plpgsql"
        )
    with op.batch_alter_table('refusal_tallies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refusal_tallies_window_start'))
        batch_op.drop_index(batch_op.f('ix_refusal_tallies_event_id'))

    op.drop_table('refusal_tallies')

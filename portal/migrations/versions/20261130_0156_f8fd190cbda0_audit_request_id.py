"""audit events carry the request id of the request that recorded them

Revision ID: f8fd190cbda0
Revises: 02cade6c651d
Create Date: 2026-11-30 01:56:21.320633

Plain ALTER TABLE on both databases (no batch copy): on SQLite a copied table would lose the
append-only triggers. DROP COLUMN needs SQLite 3.35 or newer.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f8fd190cbda0'
down_revision = '02cade6c651d'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('audit_events', sa.Column('request_id', sa.String(length=64), nullable=True))
    op.create_index('ix_audit_events_request_id', 'audit_events', ['request_id'], unique=False)


def downgrade():
    op.drop_index('ix_audit_events_request_id', table_name='audit_events')
    op.execute('ALTER TABLE audit_events DROP COLUMN request_id')

"""Indexes for the lists that page through the largest tables: the dataset access list (ending
first), the access requests and agreements lists (newest first) read their first page in index
order instead of sorting every row; the slots open to a role and still to sign; an institution's
holders of a role (its signing officials, who decide on requests to join it).

Revision ID: 02cade6c651d
Revises: 2ca0cb2b2eef
Create Date: 2026-11-29 23:50:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '02cade6c651d'
down_revision = '2ca0cb2b2eef'
branch_labels = None
depends_on = None

#: (table, index, columns)
INDEXES = (
    ('dataset_grants', 'ix_dataset_grants_ends_on', ['ends_on', 'id']),
    ('dataset_requests', 'ix_dataset_requests_created_at', ['created_at', 'id']),
    ('agreements', 'ix_agreements_created_at', ['created_at', 'id']),
    ('agreement_signatures', 'ix_agreement_signatures_role_state', ['role', 'state', 'user_id']),
    ('role_grants', 'ix_role_grants_institution_role', ['institution_id', 'role']),
)


def upgrade():
    for table, name, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade():
    for table, name, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)

"""Institution e-mail domains must be proven: state (pending / verified), how and when, TXT token.

Existing domains become pending: nobody proved them (a signing official could add any domain), so
they affiliate nobody until program staff verify them or their DNS record is found.

Revision ID: ca9a4a8e42cf
Revises: 000aa9722447
Create Date: 2026-11-29 10:12:45

"""
import secrets

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'ca9a4a8e42cf'
down_revision = '000aa9722447'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('institution_domains', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=16), nullable=False, server_default='pending'))
        batch_op.add_column(sa.Column('token', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('method', sa.String(length=13), nullable=True))
        batch_op.add_column(sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('verified_by_id', sa.Integer(), nullable=True))

    conn = op.get_bind()
    domains = sa.table('institution_domains', sa.column('id', sa.Integer), sa.column('token', sa.String))
    for (ident,) in conn.execute(sa.select(domains.c.id)).all():
        conn.execute(domains.update().where(domains.c.id == ident).values(token=secrets.token_hex(16)))

    with op.batch_alter_table('institution_domains', schema=None) as batch_op:
        batch_op.alter_column('state', server_default=None)
        batch_op.alter_column('token', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_check_constraint(op.f('ck_institution_domains_domain_state'), "state IN ('pending', 'verified')")
        batch_op.create_check_constraint(op.f('ck_institution_domains_domain_proof'), "method IN ('dns', 'staff')")
        batch_op.create_check_constraint(op.f('ck_institution_domains_verified_when_verified'), "(state = 'verified') = (verified_at IS NOT NULL)")
        batch_op.create_check_constraint(op.f('ck_institution_domains_verified_how'), "(state = 'verified') = (method IS NOT NULL)")
        batch_op.create_foreign_key(batch_op.f('fk_institution_domains_verified_by_id_users'), 'users', ['verified_by_id'], ['id'], ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('institution_domains', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_institution_domains_verified_by_id_users'), type_='foreignkey')
        batch_op.drop_constraint(op.f('ck_institution_domains_verified_how'), type_='check')
        batch_op.drop_constraint(op.f('ck_institution_domains_verified_when_verified'), type_='check')
        batch_op.drop_constraint(op.f('ck_institution_domains_domain_proof'), type_='check')
        batch_op.drop_constraint(op.f('ck_institution_domains_domain_state'), type_='check')
        batch_op.drop_column('verified_by_id')
        batch_op.drop_column('verified_at')
        batch_op.drop_column('method')
        batch_op.drop_column('token')
        batch_op.drop_column('state')

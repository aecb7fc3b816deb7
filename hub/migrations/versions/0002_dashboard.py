"""dashboard: users, audit log, patient references, review acknowledgements, questionnaires, commands

Revision ID: 0002d
Revises: 0001
Create Date: 2026-12-04 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002d'
down_revision = '0001'
branch_labels = None
depends_on = None

ID = sa.String(length=64)
TIME = sa.String(length=32)


def upgrade() -> None:
    op.create_table('users',
    sa.Column('username', ID, nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', TIME, nullable=False),
    sa.Column('password_changed_at', TIME, nullable=False),
    sa.Column('disabled_at', TIME, nullable=True),
    sa.PrimaryKeyConstraint('username')
    )
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', TIME, nullable=False),
    sa.Column('username', ID, nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('patient_id', ID, nullable=True),
    sa.Column('target', sa.String(length=256), nullable=True),
    sa.Column('client', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('audit_by_patient', 'audit_log', ['patient_id', 'at'], unique=False)
    op.create_table('patient_refs',
    sa.Column('patient_id', ID, nullable=False),
    sa.Column('clinic_ref', sa.String(length=128), nullable=False),
    sa.Column('updated_at', TIME, nullable=False),
    sa.Column('updated_by', ID, nullable=False),
    sa.PrimaryKeyConstraint('patient_id')
    )
    op.create_table('review_acks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('patient_id', ID, nullable=False),
    sa.Column('flag_key', sa.String(length=160), nullable=False),
    sa.Column('at', TIME, nullable=False),
    sa.Column('username', ID, nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('patient_id', 'flag_key', name='review_acks_once')
    )
    op.create_table('questionnaires',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('patient_id', ID, nullable=False),
    sa.Column('instrument', sa.String(length=8), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('taken_on', sa.String(length=10), nullable=False),
    sa.Column('entered_by', ID, nullable=False),
    sa.Column('entered_at', TIME, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('questionnaires_by_patient', 'questionnaires', ['patient_id', 'taken_on'], unique=False)
    op.create_table('commands_sent',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('device_id', ID, nullable=False),
    sa.Column('command', sa.String(length=32), nullable=False),
    sa.Column('patient_id', ID, nullable=True),
    sa.Column('username', ID, nullable=False),
    sa.Column('sent_at', TIME, nullable=False),
    sa.PrimaryKeyConstraint('request_id')
    )


def downgrade() -> None:
    op.drop_table('commands_sent')
    op.drop_index('questionnaires_by_patient', table_name='questionnaires')
    op.drop_table('questionnaires')
    op.drop_table('review_acks')
    op.drop_table('patient_refs')
    op.drop_index('audit_by_patient', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_table('users')

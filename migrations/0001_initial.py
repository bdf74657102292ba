from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from isp.core.models import BackupKind, JobStatus, ServiceStatus, Vendor
from json import dumps, loads
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Customer',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=200)),
                ('email', fields.CharField(null=True, max_length=254)),
                ('phone', fields.CharField(null=True, max_length=32)),
                ('address', fields.CharField(null=True, max_length=500)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'customer', 'app': 'core', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Device',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=100)),
                ('vendor', fields.CharEnumField(description='MIKROTIK: mikrotik', enum_type=Vendor, max_length=32)),
                ('host', fields.CharField(max_length=253)),
                ('port', fields.IntField(default=22)),
                ('username', fields.CharField(max_length=64)),
                ('password_enc', fields.TextField(unique=False)),
                ('host_key', fields.TextField(null=True, unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'device', 'app': 'core', 'pk_attr': 'id', 'table_description': 'A router the ISP manages (password_enc is ciphertext, host_key is pinned).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Backup',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device', fields.ForeignKeyField('core.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='backups', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharEnumField(description='EXPORT: export\nBINARY: binary', enum_type=BackupKind, max_length=16)),
                ('sha256', fields.CharField(max_length=64)),
                ('size', fields.BigIntField()),
                ('changed', fields.BooleanField(default=True)),
                ('object_key', fields.CharField(max_length=500)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'backup', 'app': 'core', 'pk_attr': 'id', 'table_description': 'One stored backup of a device, whose bytes live in the object store under object_key.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Job',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('kind', fields.CharField(max_length=32)),
                ('status', fields.CharEnumField(default=JobStatus.QUEUED, description='QUEUED: queued\nRUNNING: running\nSUCCEEDED: succeeded\nFAILED: failed', enum_type=JobStatus, max_length=16)),
                ('total', fields.IntField(default=0)),
                ('done', fields.IntField(default=0)),
                ('failed', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'job', 'app': 'core', 'pk_attr': 'id', 'table_description': 'A long-running fleet job (backups of many devices), polled over /jobs/{id}.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Plan',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=64)),
                ('download_mbps', fields.IntField()),
                ('upload_mbps', fields.IntField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'plan', 'app': 'core', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PluginRecord',
            fields=[
                ('name', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('version', fields.CharField(null=True, max_length=64)),
                ('sha256', fields.CharField(null=True, max_length=64)),
                ('source', fields.CharField(default='local', max_length=16)),
                ('enabled', fields.BooleanField(default=True)),
                ('settings', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('installed_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'plugin_record', 'app': 'core', 'pk_attr': 'name', 'table_description': 'Enabled/disabled state, installed version and checksum of one plugin.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Role',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=64)),
                ('permissions', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'auth_role', 'app': 'core', 'pk_attr': 'id', 'table_description': 'A named set of permission strings (plugins:manage, services:write ...).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Service',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('core.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='services', on_delete=OnDelete.RESTRICT)),
                ('plan', fields.ForeignKeyField('core.Plan', source_field='plan_id', db_constraint=True, to_field='id', related_name='services', on_delete=OnDelete.RESTRICT)),
                ('device', fields.ForeignKeyField('core.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='services', on_delete=OnDelete.RESTRICT)),
                ('username', fields.CharField(unique=True, max_length=64)),
                ('password_enc', fields.TextField(unique=False)),
                ('status', fields.CharEnumField(default=ServiceStatus.PENDING, description='PENDING: pending\nACTIVE: active\nSUSPENDED: suspended\nTERMINATED: terminated', enum_type=ServiceStatus, max_length=16)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'service', 'app': 'core', 'pk_attr': 'id', 'table_description': "A subscriber's service: a PPPoE login on a device, billed on a plan."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='User',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=64)),
                ('roles', fields.ManyToManyField('core.Role', unique=True, db_constraint=True, through='auth_user_role', forward_key='role_id', backward_key='auth_user_id', related_name='users', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'auth_user', 'app': 'core', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ApiToken',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('core.User', source_field='user_id', db_constraint=True, to_field='id', related_name='tokens', on_delete=OnDelete.CASCADE)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('prefix', fields.CharField(max_length=16)),
                ('scopes', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'auth_token', 'app': 'core', 'pk_attr': 'id', 'table_description': 'An API token: only its SHA256 is kept, and prefix identifies it in lists and logs.'},
            bases=['Model'],
        ),
    ]

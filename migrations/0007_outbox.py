from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('core', '0006_plugin_quarantine')]

    initial = False

    operations = [
        ops.CreateModel(
            name='OutboxRow',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key', fields.CharField(unique=True, max_length=36)),
                ('kind', fields.CharField(max_length=32)),
                ('event', fields.CharField(max_length=64)),
                ('plugin', fields.CharField(max_length=64)),
                ('hook', fields.CharField(max_length=255)),
                ('subject_model', fields.CharField(null=True, max_length=128)),
                ('subject_id', fields.CharField(null=True, max_length=64)),
                ('relations', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('args', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('ordering_key', fields.CharField(max_length=255)),
                ('status', fields.CharField(default='pending', max_length=16)),
                ('attempts', fields.IntField(default=0)),
                ('attempt_limit', fields.IntField()),
                ('next_attempt_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('claimed_by', fields.CharField(null=True, max_length=64)),
                ('lease_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('delivered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'outbox', 'app': 'core', 'indexes': [Index(fields=['status', 'ordering_key']), Index(fields=['status', 'next_attempt_at'])], 'pk_attr': 'id', 'table_description': 'One delivery owed to a plugin: an after-commit hook or a compensation to retry.'},
            bases=['Model'],
        ),
    ]

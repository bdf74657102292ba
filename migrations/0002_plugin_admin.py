from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('core', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('actor', fields.CharField(max_length=64)),
                ('action', fields.CharField(max_length=32)),
                ('plugin', fields.CharField(null=True, max_length=64)),
                ('from_version', fields.CharField(null=True, max_length=64)),
                ('to_version', fields.CharField(null=True, max_length=64)),
                ('sha256', fields.CharField(null=True, max_length=64)),
                ('detail', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
            ],
            options={'table': 'audit_entry', 'app': 'core', 'pk_attr': 'id', 'table_description': 'An administrative change: who did what, when, from which version to which.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PluginGeneration',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('value', fields.BigIntField(default=0)),
            ],
            options={'table': 'plugin_generation', 'app': 'core', 'pk_attr': 'id', 'table_description': "One row whose counter every plugin change increments, in the change's transaction."},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='PluginRecord',
            name='tree_sha256',
            field=fields.CharField(null=True, max_length=64),
        ),
    ]

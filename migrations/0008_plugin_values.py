from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('core', '0007_outbox')]

    initial = False

    operations = [
        ops.AddField(
            model_name='PluginRecord',
            name='granted',
            field=fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.CreateModel(
            name='PluginValue',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('plugin', fields.CharField(max_length=64)),
                ('key', fields.CharField(max_length=200)),
                ('value', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'plugin_value', 'app': 'core', 'unique_together': (('plugin', 'key'),), 'pk_attr': 'id', 'table_description': "One key of a sandboxed plugin's key-value store (its hooks' ``db``)."},
            bases=['Model'],
        ),
    ]

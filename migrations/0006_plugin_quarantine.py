from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('core', '0005_backup_health')]

    initial = False

    operations = [
        ops.AddField(
            model_name='PluginRecord',
            name='quarantined',
            field=fields.TextField(null=True, unique=False),
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('core', '0002_plugin_admin')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='Backup',
            index=Index(fields=['device_id', 'kind', 'id']),
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('core', '0003_backup_lookup_index')]

    initial = False

    operations = [
        ops.AddField(
            model_name='ApiToken',
            name='expires_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ApiToken',
            name='last_used_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddIndex(
            model_name='Service',
            index=Index(fields=['customer_id', 'id']),
        ),
        ops.AddIndex(
            model_name='Service',
            index=Index(fields=['device_id', 'id']),
        ),
        ops.AddIndex(
            model_name='Service',
            index=Index(fields=['plan_id', 'id']),
        ),
        ops.AddIndex(
            model_name='Service',
            index=Index(fields=['status', 'id']),
        ),
    ]

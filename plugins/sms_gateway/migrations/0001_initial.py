from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Message',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('service_id', fields.IntField(db_index=True)),
                ('customer_id', fields.IntField(db_index=True)),
                ('event', fields.CharField(max_length=16)),
                ('to', fields.CharField(null=True, max_length=32)),
                ('text', fields.TextField(unique=False)),
                ('status', fields.CharField(max_length=16)),
                ('gateway_id', fields.CharField(null=True, max_length=128)),
                ('error', fields.CharField(null=True, max_length=500)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'sms_gateway_message', 'app': 'plugin_sms_gateway', 'pk_attr': 'id', 'table_description': 'One SMS about a service change and what became of it (text has no password).'},
            bases=['Model'],
        ),
    ]

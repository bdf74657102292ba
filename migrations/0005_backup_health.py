from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('core', '0004_operator_api')]

    initial = False

    operations = [
        ops.CreateModel(
            name='JobDevice',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('job', fields.ForeignKeyField('core.Job', source_field='job_id', db_constraint=True, to_field='id', related_name='devices', on_delete=OnDelete.CASCADE)),
                ('device_id', fields.IntField()),
                ('failure', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('recorded_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'job_device', 'app': 'core', 'unique_together': (('job', 'device_id'),), 'pk_attr': 'id', 'table_description': "One device's outcome in one fleet job: written once, so a retried task records nothing twice."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ScheduleRun',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=64)),
                ('run_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('job', fields.ForeignKeyField('core.Job', source_field='job_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'schedule_run', 'app': 'core', 'unique_together': (('name', 'run_at'),), 'pk_attr': 'id', 'table_description': 'One period of a schedule that started a job, unique per (name, period) across instances.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Device',
            name='last_backup_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Device',
            name='last_backup_error',
            field=fields.TextField(null=True),
        ),
    ]

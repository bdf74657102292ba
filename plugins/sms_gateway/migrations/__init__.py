"""Migrations of the ``plugin_sms_gateway`` app (the ``sms_gateway_message`` table)."""

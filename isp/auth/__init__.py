"""Users, roles, permissions, API tokens and the guard that checks them."""

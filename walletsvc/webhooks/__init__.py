"""Signed webhooks: subscriptions per API token, the dispatcher, and the signature scheme."""

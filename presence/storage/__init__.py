"""Storage of publications, subscriptions, watchers and bindings."""

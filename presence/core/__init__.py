"""The presence core: routing, PUBLISH, SUBSCRIBE and NOTIFY."""

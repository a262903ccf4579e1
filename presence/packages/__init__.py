"""Event packages, one module each, each providing IEventPackage."""

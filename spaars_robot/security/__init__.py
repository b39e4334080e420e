"""CurveZMQ keys and allow-list authentication (`keys`), ed25519 bundle signatures (`signing`)."""

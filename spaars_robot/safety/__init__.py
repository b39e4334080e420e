"""Safety as its own room: the spec (`spec`), the per-request limiter (`limits`), the client watchdog."""

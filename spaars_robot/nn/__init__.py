"""Network building blocks shared by every algorithm (one place per concept)."""

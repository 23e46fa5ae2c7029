"""The thin HTTP layer: one module per area, each with register(app)."""

"""Audio features: one registry entry per audio model, one extraction path for every model."""

"""synctalk: per-speaker talking-avatar training (preprocess → SyncNet → UNet-328 → render)."""

__version__ = "0.1.0"

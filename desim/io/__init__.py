"""Files in and out: scenario TOML, traces, profiles and result tables, written atomically."""

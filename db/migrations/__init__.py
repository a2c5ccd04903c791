"""Package data: these SQL files install as `ares_data.migrations` (setup.py), read by ares_data/migrate.py."""

"""Package data: these prompt files install as `ares_data.prompts` (setup.py), read by ares_data/teacher/prompts.py."""
